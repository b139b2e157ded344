"""What every kind's Cell shares: the base Cell of a re-parameterizable block, its kernel-size check, and
:class:`Kernel` (a conv's parameters without its computation).

A block is a k x k conv in one geometry (channels, stride, padding or MindSpore's
``pad_mode``, dilation, groups) with three forms:

* the **branch form**: the kind's branches, run one by one (:meth:`ReparamBlock.forward_branches`);
* the **one-conv form**: where the training form is linear in its parameters, ONE conv over the
  kernel they make (:meth:`ReparamBlock.conv_kernel`), rebuilt at every step, the same function and
  gradients as the branches at the cost of one conv;
* the **deployed form** (``deploy=True``, or after :meth:`ReparamBlock.switch_to_deploy`): one conv
  ``fused_conv`` in the block's geometry, holding the kind's numpy fold of the block's arrays.

:class:`ReparamBlock` holds the geometry and its checks, the dispatch between the three forms, the
switch, ``reparam_info`` and the padding helpers; a kind's Cell defines its branches and how they
fold.  :class:`BranchBNBlock` adds what the kinds whose branches end in BNs share.
"""
import functools
import time
import warnings

from mindspore import Parameter, Tensor, nn, ops

from . import geometry
from .identities import BN_EPS, BN_FIELDS

#: the deployed conv's name in every kind (``<block>.fused_conv.weight``, ``.bias``)
DEPLOYED = "fused_conv"
#: the cells mixed precision wraps a conv or BN in keep it under one of these attributes (MindSpore's, MindCV's)
_WRAPPERS = ("_backbone", "_op")
#: the prefix of a block's own arrays when it folds itself (:meth:`ReparamBlock.own_state`)
_OWN_PREFIX = "block"


#: the arguments every block Cell takes by position: its geometry; the others are keywords
GEOMETRY_ARGS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups")


def keyword_options(*earlier):
    """A block Cell's ``__init__``: after the seven geometry arguments (:data:`GEOMETRY_ARGS`) its arguments are
    keywords.  ``earlier``: the order they had as positions before; a call that still passes them so works,
    with a FutureWarning naming them (until the next minor version)."""
    def wrap(init):
        @functools.wraps(init)
        def inner(self, *args, **kwargs):
            n = len(GEOMETRY_ARGS)
            if len(args) > n:
                names = earlier[:len(args) - n]
                if len(args) - n > len(earlier):
                    raise TypeError(f"{type(self).__name__}() takes {n} positional arguments besides self "
                                    f"(the geometry), got {len(args)}")
                twice = [name for name in names if name in kwargs]
                if twice:
                    raise TypeError(f"{type(self).__name__}() got multiple values for argument {twice[0]!r}")
                warnings.warn(f"{type(self).__name__}: {', '.join(names)} given by position; pass "
                              f"{'them' if len(names) > 1 else 'it'} by keyword (after the geometry, "
                              f"{', '.join(GEOMETRY_ARGS)}, the arguments are keywords; positions stop working "
                              f"in the next minor version)", FutureWarning, stacklevel=2)
                kwargs.update(zip(names, args[n:]))
                args = args[:n]
            return init(self, *args, **kwargs)
        return inner
    return wrap


def check_kernel_size(kernel_size, owner="block", minimum=3):
    """A square, odd kernel of at least ``minimum``: the branches sit on its centre tap, row or column."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < minimum \
            or kernel_size % 2 == 0:
        raise ValueError(f"{owner}: kernel_size must be an odd integer >= {minimum}, got {kernel_size!r}")


# naming and recompiling cells placed in a network: what switching a block in place needs
def refresh_graph(net):
    """Make graph mode compile ``net`` anew after its structure changed in place.

    MindSpore keys its compiled-graph cache on each Cell's creation time; a
    Cell whose sub-cells were swapped would otherwise keep running its old graph.
    """
    stamp = time.time_ns()
    for i, (_, cell) in enumerate(net.cells_and_names()):
        object.__setattr__(cell, "_create_time", stamp + i)


def param_prefix(cell, default=""):
    """The prefix of ``cell``'s parameter names in its network (MindCV's names need not be cell paths)."""
    for local, param in cell.parameters_and_names():
        if param.name.endswith("." + local):
            return param.name[:-len(local) - 1]
        return default
    return default


def name_params(cell, prefix):
    """Give the parameters of ``cell``, placed at ``prefix`` in a network, their full names there."""
    for local, param in cell.parameters_and_names():
        param.name = f"{prefix}.{local}" if prefix else local


class Kernel(nn.Cell):
    """A conv's parameters without its computation (``weight``, and ``bias`` if any).

    The one-conv form of a block sums its branches' kernels and convolves once:
    its branches hold parameters only.  Not being convolutions, mixed
    precision leaves them alone (MindCV's O1 would wrap a ``nn.Conv2d`` in a
    casting cell that has no ``weight``).
    """

    def __init__(self, out_channels, in_per_group, kernel, has_bias=False):
        super().__init__()
        from mindspore.common.initializer import HeUniform, Uniform, initializer

        fan_in = in_per_group * kernel[0] * kernel[1]
        self.weight = Parameter(initializer(HeUniform(negative_slope=5 ** 0.5),
                                            (out_channels, in_per_group) + tuple(kernel)), name="weight")
        self.has_bias = has_bias
        if has_bias:
            self.bias = Parameter(initializer(Uniform(1 / fan_in ** 0.5), (out_channels,)), name="bias")

    def construct(self, x):
        return x


class ReparamBlock(nn.Cell):
    """The base Cell of a re-parameterizable k x k conv (see the module's docstring).

    A kind's Cell calls ``super().__init__`` with the geometry (checked here, ValueError naming the
    argument), sets its own attributes and ``one_conv`` (whether its training form runs as one conv),
    then calls :meth:`build`.  It defines:

    * ``kind`` (``reparam_info()["kind"]``), ``info_fields`` (the attributes ``reparam_info`` carries
      besides) and ``repr_fields`` (those its repr shows besides the geometry: names, or
      ``(label, name)`` pairs);
    * ``build_training()``: the training form's sub-cells and parameters (both forms);
    * ``forward_branches(x)``: the branch form (kinds that have one);
    * ``conv_kernel()``, and ``conv_bias()`` if ``has_bias``: the one-conv form's kernel (a Tensor,
      cast to the input's type here) and bias parameter;

    A Cell holds no fold of its own: :meth:`fold_branches` calls its kind's ``fold`` on the block's own arrays,
    named as a checkpoint names them (:meth:`own_state`), so a checkpoint and a Cell fold by the same code.

    The deployed conv has a bias where :meth:`deploy_bias` says so (``has_bias``; kinds with branch BNs:
    always).  :meth:`switch_to_deploy` folds and then drops every sub-cell, parameter and constant
    tensor of the training form.
    """

    kind = None
    info_fields = ()
    repr_fields = ()

    @keyword_options("pad_mode", "has_bias", "deploy", "min_kernel")
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=None, dilation=1, groups=1, *,
                 pad_mode="pad", has_bias=False, deploy=False, min_kernel=3):
        super().__init__()
        owner = type(self).__name__
        check_kernel_size(kernel_size, owner, min_kernel)
        stride = geometry.pair(stride, "stride", owner)
        dilation = geometry.pair(dilation, "dilation", owner)
        if pad_mode not in ("pad", "valid", "same"):
            raise ValueError(f"{owner}: pad_mode must be pad, valid or same, got {pad_mode!r}")
        pads = geometry.pads_of(0 if pad_mode == "valid" else padding, kernel_size, dilation, owner)
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or in_channels % groups \
                or out_channels % groups:
            raise ValueError(f"{owner}: groups={groups!r} must divide in_channels={in_channels} "
                             f"and out_channels={out_channels}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.dilation, self.groups = stride, dilation, groups
        self.pad_mode = "pad" if pad_mode == "valid" else pad_mode
        self.same = self.pad_mode == "same"
        self.padding = (0, 0, 0, 0) if self.same else pads
        self.has_bias = bool(has_bias)
        self.deploy = bool(deploy)
        self.one_conv = False

    # ------------------------------------------------------------ construction

    def deploy_bias(self):
        """Whether the deployed conv has a bias."""
        return self.has_bias

    def build(self):
        """The deployed conv (``deploy=True``) or the training form: the kind's :meth:`build_training`,
        and for the one-conv form the conv primitives of the block's own geometry ('same' included)."""
        if self.deploy:
            setattr(self, DEPLOYED, geometry.block_conv(self, self.deploy_bias()))
            return
        if self.one_conv:
            native = geometry.block_conv(self, self.has_bias)
            self.conv2d, self.bias_add = native.conv2d, native.bias_add
        self.build_training()

    def build_training(self):
        """The kind's training form: its sub-cells and parameters (both forms)."""
        raise NotImplementedError

    def branch_conv(self, kernel, padding=0, dilation=1, stride=None, in_channels=None, out_channels=None):
        """A branch's conv in the block's groups: explicit ``padding``, the block's stride and channels
        unless given."""
        return nn.Conv2d(self.in_channels if in_channels is None else in_channels,
                         self.out_channels if out_channels is None else out_channels, kernel,
                         stride=self.stride if stride is None else stride, pad_mode="pad", padding=padding,
                         dilation=dilation, group=self.groups, has_bias=False)

    @classmethod
    def geometry_of(cls, conv):
        """``(kernel_size, options)``: a square ``nn.Conv2d``'s geometry as this Cell's arguments
        (:meth:`acnet_ms.kinds.geometry.ConvGeometry.block_args`)."""
        try:
            return geometry.ConvGeometry.of(conv).block_args()
        except ValueError as err:
            raise ValueError(f"{cls.__name__}.from_conv: {err}") from None

    @property
    def conv_geometry(self):
        """The block's own geometry as one plain conv's (:class:`acnet_ms.kinds.geometry.ConvGeometry`): its
        channels, k x k kernel, stride, dilation, groups and bias, MindSpore's 'same' or its explicit padding."""
        return geometry.ConvGeometry(self.in_channels, self.out_channels, (self.kernel_size,) * 2, self.stride,
                                     (0, 0, 0, 0) if self.same else self.padding, self.dilation, self.groups,
                                     "same" if self.same else "pad", self.has_bias)

    # ------------------------------------------------------------ padding

    def pads_for(self, x):
        """(top, bottom, left, right) of the k x k conv for ``x`` ('same': MindSpore's, from its size)."""
        if self.same:
            return geometry.same_pads(x.shape[2], x.shape[3], self.kernel_size, self.stride, self.dilation)
        return self.padding

    def pad_same(self, x):
        """``x`` padded as MindSpore's 'same' pads it (output ceil(size / stride), the odd row/column at the
        end), for branches that then pad explicitly; ``x`` itself unless the block's pad mode is 'same'."""
        return geometry.pad_zeros(x, self.pads_for(x)) if self.same else x

    # ------------------------------------------------------------ forward

    def forward_branches(self, x):
        """The branch form's output (kinds that have one)."""
        raise NotImplementedError

    def conv_kernel(self):
        """The one-conv form's k x k kernel (a Tensor), rebuilt from the parameters at every call."""
        raise NotImplementedError

    def conv_bias(self):
        """The one-conv form's bias parameter (blocks with ``has_bias``)."""
        raise NotImplementedError

    def construct(self, x):
        if self.deploy:
            return self.fused_conv(x)
        if self.one_conv:
            # the kernel is built here, outside any conv cell, so mixed precision (O2/O3 cast the input to
            # float16) does not cast its parameters: it takes the input's type, as a conv cell's weight would
            out = self.conv2d(x, ops.cast(self.conv_kernel(), x.dtype))
            if self.has_bias:
                out = self.bias_add(out, ops.cast(self.conv_bias(), out.dtype))
            return out
        return self.forward_branches(x)

    # ------------------------------------------------------------ re-parameterisation

    def own_state(self, prefix=_OWN_PREFIX):
        """``{name: numpy array}``: the training form's parameters (BN statistics included) under the names a
        checkpoint gives them at ``prefix`` (a mixed-precision wrapper's cell is no part of a name)."""
        state = {}
        for path, param in self.parameters_and_names():
            local = ".".join(part for part in path.split(".") if part not in _WRAPPERS)
            state[f"{prefix}.{local}"] = param.asnumpy()
        return state

    def fold_branches(self):
        """``(kernel, bias or None)``, numpy: the kind's own fold (``fold`` of the kind named :attr:`kind`, the
        one a checkpoint's conversion calls) of the training form's arrays (:meth:`own_state`)."""
        from .table import get_kind

        kernel, bias, _ = get_kind(self.kind).fold(self.own_state(), _OWN_PREFIX, self.reparam_info())
        return kernel, bias

    def get_equivalent_kernel_bias(self):
        """The single conv's (kernel, bias) that equals this block in eval mode, as numpy arrays (bias
        ``None`` where the deployed conv has none)."""
        if self.deploy:
            conv = getattr(self, DEPLOYED)
            return conv.weight.asnumpy(), conv.bias.asnumpy() if conv.has_bias else None
        return self.fold_branches()

    def reparam_info(self):
        """What a converter needs besides the parameters to fold this block (JSON-able)."""
        return dict(kind=self.kind, **{name: getattr(self, name) for name in self.info_fields})

    def switch_to_deploy(self):
        """Replace the training form by ``fused_conv`` in place (no-op when already switched)."""
        if self.deploy:
            return
        kernel, bias = self.get_equivalent_kernel_bias()
        conv = geometry.block_conv(self, bias is not None)
        conv.weight = Parameter(Tensor(kernel), name=f"{DEPLOYED}.weight")
        if bias is not None:
            conv.bias = Parameter(Tensor(bias), name=f"{DEPLOYED}.bias")
        training = list(self._cells) + list(self._params) + \
            [name for name, value in vars(self).items() if isinstance(value, Tensor)]
        for name in training:
            delattr(self, name)
        setattr(self, DEPLOYED, conv)
        self.deploy = True

    def extend_repr(self):
        fields = [f"in_channels={self.in_channels}", f"out_channels={self.out_channels}",
                  f"kernel_size={self.kernel_size}", f"stride={self.stride}", f"padding={self.padding}",
                  f"pad_mode={self.pad_mode}", f"dilation={self.dilation}", f"groups={self.groups}"]
        for field in self.repr_fields:
            label, name = field if isinstance(field, tuple) else (field, field)
            fields.append(f"{label}={getattr(self, name)}")
        return ", ".join(fields + [f"deploy={self.deploy}"])


class BranchBNBlock(ReparamBlock):
    """A block whose branches each end in a BN (``branch_bn=True``), or carry none and train as one conv
    (``branch_bn=False``, the sites with nowhere to put a folded bias; then ``has_bias`` may add a bias).

    The BNs' ``eps`` and ``momentum`` are the block's; the deployed conv has a bias unless the block has
    neither BN nor bias.
    """

    @keyword_options("pad_mode", "has_bias", "deploy", "branch_bn", "eps", "momentum", "min_kernel")
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=None, dilation=1, groups=1, *,
                 pad_mode="pad", has_bias=False, deploy=False, branch_bn=True, eps=BN_EPS, momentum=0.9,
                 min_kernel=3):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         pad_mode=pad_mode, has_bias=has_bias, deploy=deploy, min_kernel=min_kernel)
        if has_bias and branch_bn:
            raise ValueError(f"{type(self).__name__}: has_bias needs branch_bn=False (the branch BNs carry the bias)")
        self.branch_bn, self.eps, self.momentum = bool(branch_bn), float(eps), momentum
        self.one_conv = not self.branch_bn

    def deploy_bias(self):
        return self.has_bias or self.branch_bn

    def new_bn(self, channels=None, gamma_init=None):
        """A branch BN with the block's ``eps`` and ``momentum`` (``gamma_init``: its initial gamma)."""
        options = dict(eps=self.eps, momentum=self.momentum)
        if gamma_init is not None:
            options["gamma_init"] = gamma_init
        return nn.BatchNorm2d(self.out_channels if channels is None else channels, **options)

    @staticmethod
    def bn_arrays(bn):
        """``(gamma, beta, moving_mean, moving_variance)`` of a BN cell, numpy."""
        return tuple(getattr(bn, field).asnumpy() for field in BN_FIELDS)

    @classmethod
    def options_of(cls, conv, bn=None, branch_bn=True):
        """``(kernel_size, options)`` of a block in place of ``conv`` (and of ``bn`` after it): its geometry,
        ``branch_bn``, ``bn``'s ``eps`` and ``momentum`` (with branch BNs) or ``conv``'s bias (without)."""
        kernel_size, options = cls.geometry_of(conv)
        options["branch_bn"] = branch_bn
        if bn is not None and branch_bn:
            options.update(eps=bn.eps, momentum=1.0 - bn.momentum)  # a BN cell keeps 1 - its argument
        if not branch_bn:
            options["has_bias"] = conv.has_bias
        return kernel_size, options

