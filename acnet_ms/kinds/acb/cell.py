"""Asymmetric Convolution Block (ACNet, Ding et al., ICCV 2019)."""
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from . import fold
from .. import identities
from .fold import BRANCH_SETS
from .. import geometry
from ..cell import Kernel, check_kernel_size


class ACBlock(nn.Cell):
    """k x k conv + BN, trained as parallel k x k, 1 x k and k x 1 branches, deployed as one conv.

    Training form with branch BNs (``branch_bn=True``, ACNet's ACB):
    ``square_conv``/``square_bn``, ``hor_conv``/``hor_bn`` (1 x k) and
    ``ver_conv``/``ver_bn`` (k x 1); the output is the sum of the BN outputs.
    Each asymmetric window lies on one row (column) of the square window, the
    centre one or, with ``position="corner"``, the bottom row (right column),
    for any stride, dilation, groups and padding: its conv pads by the square
    conv's padding less the row's (column's) offset in the window, and where
    that is negative it crops as many rows (columns) off its input instead.

    Training form without branch BNs (``branch_bn=False``): the convs are
    summed with no BN of their own (a BN, if the model has one, follows the
    block).  The sum is linear, so it runs as ONE conv over the kernel
    ``square + embedded 1 x k + embedded k x 1``, rebuilt at every step from the
    three parameters: the same function and gradients as three convs at the
    cost of one.  ``has_bias`` adds a bias to that form.

    Inference form (``deploy=True`` or after :meth:`switch_to_deploy`): one
    k x k conv ``fused_conv`` with the square conv's geometry, with a bias
    unless the block has neither BN nor bias.

    Args:
        padding: an int, ``(top, bottom, left, right)``, or ``None`` (keep the size at
            stride 1); ignored with ``pad_mode="same"`` (MindSpore's: output size
            ceil(input / stride), the odd padding row/column at the bottom/right).
        branches: ``"hv"`` (both asymmetric branches), ``"h"`` (1 x k only), ``"v"`` (k x 1 only).
        position: ``"center"`` or ``"corner"`` (the paper's border variant).
        gamma_init: initial gamma of the branch BNs (ACNet's CIFAR recipe: 1/3);
            ``None`` keeps 1.  ``eps``, ``momentum``: those of the branch BNs.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=None, dilation=1,
                 groups=1, gamma_init=None, deploy=False, branches="hv", branch_bn=True, position="center",
                 pad_mode="pad", has_bias=False, eps=identities.BN_EPS, momentum=0.9):
        super().__init__()
        check_kernel_size(kernel_size)
        stride, dilation = geometry.pair(stride, "stride", "ACBlock"), geometry.pair(dilation, "dilation", "ACBlock")
        if pad_mode not in ("pad", "valid", "same"):
            raise ValueError(f"ACBlock: pad_mode must be pad, valid or same, got {pad_mode!r}")
        pads = geometry.pads_of(0 if pad_mode == "valid" else padding, kernel_size, dilation, "ACBlock")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"ACBlock: groups={groups} must divide in_channels={in_channels} "
                             f"and out_channels={out_channels}")
        if branches not in BRANCH_SETS:
            raise ValueError(f"ACBlock: branches must be one of {', '.join(BRANCH_SETS)}, got {branches!r}")
        if has_bias and branch_bn:
            raise ValueError("ACBlock: has_bias needs branch_bn=False (branch BNs carry the bias)")
        self.row, self.col = fold.asym_offsets(kernel_size, position)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation, self.groups = kernel_size, stride, dilation, groups
        self.pad_mode = "pad" if pad_mode == "valid" else pad_mode
        self.padding = (0, 0, 0, 0) if self.pad_mode == "same" else pads
        self.branches, self.branch_bn, self.position = branches, bool(branch_bn), position
        self.has_bias, self.eps = bool(has_bias), float(eps)
        self.use_hor, self.use_ver = "h" in branches, "v" in branches
        self.same = self.pad_mode == "same"
        self.deploy = deploy
        self.hor_crop = self.ver_crop = (0, 0, 0, 0)
        if deploy:
            self.fused_conv = geometry.block_conv(self, self.has_bias or self.branch_bn)
            return
        if not self.branch_bn:
            # one conv over the summed kernel: the square conv's own geometry, 'same' included
            native = geometry.block_conv(self, self.has_bias)
            self.conv2d, self.bias_add = native.conv2d, native.bias_add
            kernels = {"square": (kernel_size, kernel_size), "hor": (1, kernel_size), "ver": (kernel_size, 1)}
            for name in ("square",) + BRANCH_SETS[branches]:
                setattr(self, name + "_conv", Kernel(out_channels, in_channels // groups, kernels[name],
                                                     has_bias=self.has_bias and name == "square"))
            return
        # with 'same' the input is padded explicitly first (the amount depends on its size)
        k = kernel_size
        bn = dict(eps=eps, momentum=momentum)
        if gamma_init is not None:
            bn["gamma_init"] = gamma_init
        self.square_conv = self._conv((k, k), self.padding, dilation)
        self.square_bn = nn.BatchNorm2d(out_channels, **bn)
        if self.use_hor:
            pads, self.hor_crop = geometry.sub_window(self.padding, k, dilation, self.row, 0, 1, k)
            self.hor_conv = self._conv((1, k), pads, (1, dilation[1]))
            self.hor_bn = nn.BatchNorm2d(out_channels, **bn)
        if self.use_ver:
            pads, self.ver_crop = geometry.sub_window(self.padding, k, dilation, 0, self.col, k, 1)
            self.ver_conv = self._conv((k, 1), pads, (dilation[0], 1))
            self.ver_bn = nn.BatchNorm2d(out_channels, **bn)
        self.crop_hor, self.crop_ver = any(self.hor_crop), any(self.ver_crop)

    # ------------------------------------------------------------ construction helpers

    def _conv(self, kernel, padding, dilation, has_bias=False):
        return nn.Conv2d(self.in_channels, self.out_channels, kernel, stride=self.stride, pad_mode="pad",
                         padding=padding, dilation=dilation, group=self.groups, has_bias=has_bias)


    @classmethod
    def from_conv(cls, conv, bn=None, gamma_init=None, branches="hv", branch_bn=True, position="center",
                  seed=0):
        """An ACB in place of ``conv`` (and of ``bn`` after it, if given), same geometry.

        The square branch starts from ``conv``'s kernel (and ``bn``'s values);
        the asymmetric kernels are drawn from N(0, s^2 k), s the square kernel's
        standard deviation (the variance an initialiser scaled by fan gives a
        kernel with k times fewer taps).
        """
        kh, kw = conv.kernel_size
        if kh != kw:
            raise ValueError(f"ACBlock.from_conv: kernel {kh}x{kw} is not square")
        padding = conv.padding if isinstance(conv.padding, tuple) else (conv.padding,) * 4
        opts = dict(stride=tuple(conv.stride[-2:]), padding=tuple(padding), dilation=tuple(conv.dilation[-2:]),
                    groups=conv.group, pad_mode=conv.pad_mode, gamma_init=gamma_init, branches=branches,
                    branch_bn=branch_bn, position=position)
        if bn is not None and branch_bn:
            opts.update(eps=bn.eps, momentum=1.0 - bn.momentum)
        if not branch_bn:
            opts["has_bias"] = conv.has_bias
        block = cls(conv.in_channels, conv.out_channels, kh, **opts)
        square = conv.weight.asnumpy()
        block.square_conv.weight.set_data(Tensor(square))
        if conv.has_bias and not branch_bn:
            block.square_conv.bias.set_data(Tensor(conv.bias.asnumpy()))
        rng = np.random.default_rng(seed)
        std = float(square.std()) * np.sqrt(kh) or 1e-2
        for name in BRANCH_SETS[branches]:
            weight = getattr(block, name + "_conv").weight
            weight.set_data(Tensor(rng.normal(0.0, std, weight.shape).astype(square.dtype)))
        if bn is not None and branch_bn and gamma_init is None:
            for field in ("gamma", "beta"):
                getattr(block.square_bn, field).set_data(Tensor(getattr(bn, field).asnumpy()))
        return block

    # ------------------------------------------------------------ forward

    def _pad_same(self, x):
        """Pad as MindSpore's 'same' does: output ceil(size / stride), the odd row/column at the end."""
        return geometry.pad_zeros(x, geometry.same_pads(x.shape[2], x.shape[3], self.kernel_size, self.stride,
                                                        self.dilation))

    def summed_kernel(self):
        """The k x k kernel of the BN-free form: square + embedded asymmetric kernels (a Tensor)."""
        k = self.kernel_size
        w = self.square_conv.weight
        if self.use_hor:
            w = w + ops.pad(self.hor_conv.weight, (0, 0, self.row, k - 1 - self.row))
        if self.use_ver:
            w = w + ops.pad(self.ver_conv.weight, (self.col, k - 1 - self.col, 0, 0))
        return w

    def construct(self, x):
        if self.deploy:
            return self.fused_conv(x)
        if not self.branch_bn:
            # the kernel is built here, outside any conv cell, so mixed precision (O2/O3 cast the
            # input to float16) does not cast it: it takes the input's type, as a conv cell's weight would
            out = self.conv2d(x, ops.cast(self.summed_kernel(), x.dtype))
            if self.has_bias:
                out = self.bias_add(out, ops.cast(self.square_conv.bias, out.dtype))
            return out
        if self.same:
            x = self._pad_same(x)
        out = self.square_bn(self.square_conv(x))
        if self.use_hor:
            hx = geometry.crop(x, self.hor_crop) if self.crop_hor else x
            out = out + self.hor_bn(self.hor_conv(hx))
        if self.use_ver:
            vx = geometry.crop(x, self.ver_crop) if self.crop_ver else x
            out = out + self.ver_bn(self.ver_conv(vx))
        return out

    # ------------------------------------------------------------ re-parameterisation

    def branch_arrays(self, branch):
        """``(kernel, gamma, beta, moving_mean, moving_variance)`` of one branch (``(kernel,)``
        without branch BNs) as numpy arrays."""
        conv = getattr(self, branch + "_conv")
        if not self.branch_bn:
            return (conv.weight.asnumpy(),)
        bn = getattr(self, branch + "_bn")
        return (conv.weight.asnumpy(),) + tuple(getattr(bn, f).asnumpy() for f in identities.BN_FIELDS)

    def get_equivalent_kernel_bias(self):
        """The single conv's (kernel, bias) that equals this block in eval mode, as numpy arrays
        (bias ``None`` for a block with neither BN nor bias)."""
        if self.deploy:
            bias = self.fused_conv.bias.asnumpy() if self.fused_conv.has_bias else None
            return self.fused_conv.weight.asnumpy(), bias
        arrays = {b: self.branch_arrays(b) for b in ("square",) + BRANCH_SETS[self.branches]}
        bias = self.square_conv.bias.asnumpy() if self.has_bias and not self.branch_bn else None
        return fold.fold_acb(arrays["square"], arrays.get("hor"), arrays.get("ver"), eps=self.eps,
                             position=self.position, bias=bias)

    def reparam_info(self):
        """What a converter needs besides the parameters to fold this block (JSON-able)."""
        return dict(kind="acb", branches=self.branches, branch_bn=self.branch_bn, position=self.position,
                    eps=self.eps, has_bias=self.has_bias)

    def switch_to_deploy(self):
        """Replace the branches by ``fused_conv`` in place (no-op when already switched)."""
        if self.deploy:
            return
        kernel, bias = self.get_equivalent_kernel_bias()
        conv = geometry.block_conv(self, bias is not None)
        conv.weight = Parameter(Tensor(kernel), name="fused_conv.weight")
        if bias is not None:
            conv.bias = Parameter(Tensor(bias), name="fused_conv.bias")
        for branch in fold.BRANCHES:
            for part in ("_conv", "_bn"):
                if hasattr(self, branch + part):
                    delattr(self, branch + part)
        self.fused_conv = conv
        self.deploy = True

    def extend_repr(self):
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"pad_mode={self.pad_mode}, dilation={self.dilation}, groups={self.groups}, "
                f"branches={self.branches}, branch_bn={self.branch_bn}, position={self.position}, "
                f"deploy={self.deploy}")
