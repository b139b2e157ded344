"""RepVGG / MobileOne-style block (Ding et al., CVPR 2021; Vasu et al., CVPR 2023).

A k x k conv (+ BN) trained as ``num_kxk`` parallel k x k conv-BN branches, a
1 x 1 conv-BN branch (MobileOne's "scale" branch) and, where the conv keeps
the input's shape and grid, an identity BN branch; deployed as one conv.  A
1 x 1 conv (MobileOne's pointwise convs) gets ``num_kxk`` parallel 1 x 1
branches and the identity, no separate scale branch.  The arithmetic is
:func:`acnet_ms.kinds.rep.fold.fold_rep`.
"""
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from .. import geometry, identities
from ..cell import BranchBNBlock, Kernel, keyword_options
from ..identities import BN_EPS
from ..._moved import moved_attr as _moved_attr


def keeps_grid(in_channels, out_channels, kernel_size, stride, pads, dilation, same):
    """Whether ``y = x`` is a branch of this conv: as many channels out as in, stride 1, and output pixel
    (i, j) centred on input pixel (i, j) with the input's size (padding ``dilation * (k // 2)`` on every
    side, or MindSpore's 'same', which at stride 1 is that padding)."""
    if in_channels != out_channels or tuple(stride) != (1, 1):
        return False
    c = kernel_size // 2
    return bool(same) or tuple(pads) == (dilation[0] * c,) * 2 + (dilation[1] * c,) * 2


def _gain(channels, name="gain"):
    """A per-output-channel gain of the constant-scale form, at 1."""
    return Parameter(Tensor(np.ones(channels, np.float32)), name=name)


def _gained(kernel, gain):
    """``kernel`` with each output channel's row times its gain."""
    return kernel * ops.reshape(gain, (-1, 1, 1, 1))


class Branch(nn.Cell):
    """One branch: ``conv`` then ``bn`` (if any).  In the BN-free form ``conv`` is a :class:`Kernel`
    (parameters only) and the branch is not called; in the constant-scale form it also holds ``gain``."""

    def __init__(self, conv, bn=None, gain=False):
        super().__init__()
        self.conv = conv
        self.has_bn = bn is not None
        if bn is not None:
            self.bn = bn
        if gain:
            self.gain = _gain(conv.weight.shape[0])

    def construct(self, x):
        if self.has_bn:
            return self.bn(self.conv(x))
        return self.conv(x)


class RepBlock(BranchBNBlock):
    """k x k conv + BN, trained as parallel k x k, 1 x 1 and identity branches, deployed as one conv.

    Training form with branch BNs (``branch_bn=True``): ``dense[i]`` (``conv``
    k x k + ``bn``) for i < ``num_kxk``, ``scale`` (1 x 1 conv + BN; k > 1 and
    ``scale=True``) and ``identity_bn`` (a BN of the input; ``identity=True``
    and :func:`keeps_grid`); the output is their sum.  The 1 x 1 conv reads the
    centre tap of the k x k window for every stride, dilation, groups and
    padding: it pads by the square conv's padding less ``dilation * (k // 2)``
    and, where that is negative, crops the input instead (``geometry.sub_window``).
    With ``pad_mode="same"`` the input is padded explicitly first (MindSpore's
    amounts, from its size), the identity reading the unpadded input.

    Quantization-aware training form (``quant_aware=True``, QARepVGG: Chu et
    al., AAAI 2024; needs branch BNs): the k x k branches keep their BNs, the
    1 x 1 branch is a bare conv and the identity adds ``x`` itself, and one BN
    (``post_bn``, the site's own BN) normalizes the sum: no BN rescales the
    identity into a large centre tap, the cause of RepVGG's INT8 collapse.

    Training form without branch BNs (``branch_bn=False``): the branches are
    linear, so the block runs as ONE conv over ``sum_i dense[i] + centred scale
    + identity kernel``, rebuilt at every step from the parameters (the
    identity adds x itself, no parameter).  ``has_bias`` adds a bias
    (``dense[0].conv.bias``) to that form.

    Constant-scale linear form (``csla=True``; RepOpt's CSLA, Ding et al., ICLR
    2023; no branch BNs): the same one conv, each branch's kernel times a
    per-output-channel gain (``dense[i].gain``, ``scale.gain``,
    ``identity_gain``, all 1 at first).  Trained with the gains, it is RepOpt's
    hyper-search model; with the gains held fixed, its training by SGD is the
    plain conv's under :mod:`acnet_ms.training.repopt`.

    Inference form (``deploy=True`` or after :meth:`switch_to_deploy`): one
    conv ``fused_conv`` with the block's geometry, with a bias unless the
    block has neither BN nor bias.

    Args:
        padding: an int, ``(top, bottom, left, right)``, or ``None`` (keep the size at stride 1); ignored
            with ``pad_mode`` ``same`` / ``valid``.
        num_kxk: how many parallel k x k branches (MobileOne's ``num_conv_branches``).
        scale, identity: whether the 1 x 1 branch / the identity branch (where the geometry allows) exist.
        eps, momentum: those of the branch BNs.
    """

    kind = "rep"
    info_fields = ("kernel_size", "num_kxk", "has_scale", "has_identity", "branch_bn", "quant_aware", "csla",
                   "has_bias", "eps")
    repr_fields = ("num_kxk", ("scale", "has_scale"), ("identity", "has_identity"), "branch_bn", "quant_aware",
                   "csla")

    @keyword_options("num_kxk", "scale", "identity", "branch_bn", "quant_aware", "csla", "pad_mode", "has_bias",
                     "eps", "momentum", "deploy")
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=None, dilation=1, groups=1, *,
                 num_kxk=1, scale=True, identity=True, branch_bn=True, quant_aware=False, csla=False,
                 pad_mode="pad", has_bias=False, eps=BN_EPS, momentum=0.9, deploy=False):
        if isinstance(num_kxk, bool) or not isinstance(num_kxk, int) or num_kxk < 1:
            raise ValueError(f"RepBlock: num_kxk must be an integer >= 1, got {num_kxk!r}")
        if csla and quant_aware:
            raise ValueError("RepBlock: csla and quant_aware are two forms; choose one")
        branch_bn = branch_bn and not csla
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         pad_mode=pad_mode, has_bias=has_bias, deploy=deploy, branch_bn=branch_bn, eps=eps,
                         momentum=momentum, min_kernel=1)
        if quant_aware and not branch_bn:
            raise ValueError("RepBlock: quant_aware needs branch_bn=True (its k x k branches and the sum end in BNs)")
        self.num_kxk = num_kxk
        self.quant_aware = bool(quant_aware)
        self.csla = bool(csla)
        self.has_scale = bool(scale) and kernel_size > 1
        self.has_identity = bool(identity) and keeps_grid(in_channels, out_channels, kernel_size, self.stride,
                                                          self.padding, self.dilation, self.same)
        self.scale_crop, self.crop_scale = (0, 0, 0, 0), False
        self.build()

    def build_training(self):
        k, per_group = self.kernel_size, self.in_channels // self.groups
        if self.one_conv:
            self.dense = nn.CellList([Branch(Kernel(self.out_channels, per_group, (k, k), self.has_bias and i == 0),
                                             gain=self.csla) for i in range(self.num_kxk)])
            if self.has_scale:
                self.scale = Branch(Kernel(self.out_channels, per_group, (1, 1)), gain=self.csla)
                self.centre = geometry.centre_tap(k)
            if self.has_identity:
                self.identity_kernel = Tensor(identities.identity_kernel(self.out_channels, per_group, k, np.float32))
                if self.csla:
                    self.identity_gain = _gain(self.out_channels, "identity_gain")
            return
        dilation = self.dilation
        self.dense = nn.CellList([Branch(self.branch_conv((k, k), self.padding, dilation), self.new_bn())
                                  for _ in range(self.num_kxk)])
        if self.has_scale:
            pads, self.scale_crop = geometry.sub_window(self.padding, k, dilation, k // 2, k // 2, 1, 1)
            self.crop_scale = any(self.scale_crop)
            self.scale = Branch(self.branch_conv((1, 1), pads, (1, 1)), None if self.quant_aware else self.new_bn())
        if self.quant_aware:
            self.post_bn = self.new_bn()
        elif self.has_identity:
            self.identity_bn = self.new_bn()

    @classmethod
    def from_conv(cls, conv, bn=None, num_kxk=1, scale=True, identity=True, branch_bn=True, quant_aware=False,
                  csla=False, gamma_init=None, seed=0):
        """A rep block in place of ``conv`` (and of ``bn`` after it, if given), same geometry.

        The first k x k branch starts from ``conv``'s kernel (and ``bn``'s gamma
        and beta); the other kernels are drawn from N(0, s^2 m), s the kernel's
        standard deviation and m how many times fewer taps they have (1 for
        k x k, k^2 for the 1 x 1).  ``gamma_init``: every branch BN's initial
        gamma (ACNet's CIFAR recipe, by analogy: 1 / the number of branches keeps
        the sum at the plain conv's scale); ``None`` keeps ``bn``'s gamma and beta
        in the first branch and 1 in the others.  In the quantization-aware form ``bn``'s gamma and beta go
        to the BN after the sum (``gamma_init`` sets the k x k branches' BNs).  In the constant-scale form
        (``csla``) the gains start at 1, or at ``gamma_init`` on the k x k and 1 x 1 branches if given.
        """
        kh, opts = cls.options_of(conv, bn, branch_bn and not csla)
        block = cls(conv.in_channels, conv.out_channels, kh, num_kxk=num_kxk, scale=scale, identity=identity,
                    quant_aware=quant_aware and branch_bn, csla=csla, **opts)
        kernel = conv.weight.asnumpy()
        first = block.dense[0]
        first.conv.weight.set_data(Tensor(kernel))
        if block.has_bias:
            first.conv.bias.set_data(Tensor(conv.bias.asnumpy()))
        rng = np.random.default_rng(seed)
        std = float(kernel.std()) or 1e-2
        others = [(b.conv.weight, 1) for b in list(block.dense)[1:]]
        if block.has_scale:
            others.append((block.scale.conv.weight, kh))
        for weight, spread in others:
            weight.set_data(Tensor(rng.normal(0.0, std * spread, weight.shape).astype(kernel.dtype)))
        if block.branch_bn and gamma_init is not None:
            for norm in block.branch_bns():
                norm.gamma.set_data(Tensor(np.full(norm.gamma.shape, gamma_init, np.float32)))
        if block.csla and gamma_init is not None:
            for gain in block.gains()[:-1] if block.has_identity else block.gains():
                gain.set_data(Tensor(np.full(gain.shape, gamma_init, np.float32)))
        if bn is not None and branch_bn and (block.quant_aware or gamma_init is None):
            kept = block.post_bn if block.quant_aware else first.bn
            for field in ("gamma", "beta"):
                getattr(kept, field).set_data(Tensor(getattr(bn, field).asnumpy()))
        return block

    def branch_bns(self):
        """The BNs of the branches (training form with branch BNs), the identity's included; in the
        quantization-aware form the k x k branches' (not the one after the sum)."""
        norms = [b.bn for b in self.dense]
        if self.quant_aware:
            return norms
        norms += [self.scale.bn] if self.has_scale else []
        return norms + ([self.identity_bn] if self.has_identity else [])

    def gains(self):
        """The constant-scale form's gains: the k x k branches', the 1 x 1 branch's, the identity's (those
        there are); ``[]`` in the other forms."""
        if not self.csla or not self.one_conv:
            return []
        out = [b.gain for b in self.dense] + ([self.scale.gain] if self.has_scale else [])
        return out + ([self.identity_gain] if self.has_identity else [])

    # ------------------------------------------------------------ forward

    def conv_kernel(self):
        """The k x k kernel of the BN-free form: the k x k kernels, the 1 x 1 one on the centre tap and the
        identity (a Tensor), each times its gain in the constant-scale form."""
        w = self._branch_kernel(self.dense[0])
        for i in range(1, self.num_kxk):
            w = w + self._branch_kernel(self.dense[i])
        if self.has_scale:
            w = w + self._branch_kernel(self.scale) * self.centre
        if self.has_identity:
            identity = ops.cast(self.identity_kernel, w.dtype)
            w = w + (_gained(identity, self.identity_gain) if self.csla else identity)
        return w

    def _branch_kernel(self, branch):
        """A branch's kernel, times its gain in the constant-scale form."""
        return _gained(branch.conv.weight, branch.gain) if self.csla else branch.conv.weight

    def conv_bias(self):
        return self.dense[0].conv.bias

    def forward_branches(self, x):
        padded = self.pad_same(x)
        out = self.dense[0](padded)
        for i in range(1, self.num_kxk):
            out = out + self.dense[i](padded)
        if self.has_scale:
            bare = self.scale(geometry.crop(padded, self.scale_crop) if self.crop_scale else padded)
            out = out + (ops.cast(bare, out.dtype) if self.quant_aware else bare)
        if self.quant_aware:  # the bare branches in the BN outputs' dtype (mixed precision keeps BNs float32)
            return self.post_bn(out + ops.cast(x, out.dtype) if self.has_identity else out)
        if self.has_identity:
            out = out + self.identity_bn(x)
        return out

# the names this module had before the package was laid out by role (acnet_ms/_moved.py)
__getattr__ = _moved_attr(__name__)
