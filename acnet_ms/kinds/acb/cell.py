"""Asymmetric Convolution Block (ACNet, Ding et al., ICCV 2019)."""
import numpy as np
from mindspore import Tensor, ops

from . import fold
from .fold import BRANCH_SETS
from .. import geometry
from ..cell import BranchBNBlock, Kernel, keyword_options
from ..identities import BN_EPS


class ACBlock(BranchBNBlock):
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

    kind = "acb"
    info_fields = ("branches", "branch_bn", "position", "eps", "has_bias")
    repr_fields = ("branches", "branch_bn", "position")

    @keyword_options("gamma_init", "deploy", "branches", "branch_bn", "position", "pad_mode", "has_bias", "eps",
                     "momentum")
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=None, dilation=1,
                 groups=1, *, gamma_init=None, deploy=False, branches="hv", branch_bn=True, position="center",
                 pad_mode="pad", has_bias=False, eps=BN_EPS, momentum=0.9):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         pad_mode=pad_mode, has_bias=has_bias, deploy=deploy, branch_bn=branch_bn, eps=eps,
                         momentum=momentum)
        if branches not in BRANCH_SETS:
            raise ValueError(f"ACBlock: branches must be one of {', '.join(BRANCH_SETS)}, got {branches!r}")
        self.row, self.col = fold.asym_offsets(kernel_size, position)
        self.branches, self.position, self.gamma_init = branches, position, gamma_init
        self.use_hor, self.use_ver = "h" in branches, "v" in branches
        self.hor_crop = self.ver_crop = (0, 0, 0, 0)
        self.crop_hor = self.crop_ver = False
        self.build()

    def build_training(self):
        k, groups = self.kernel_size, self.groups
        if self.one_conv:
            # parameters only: the one conv runs over their summed kernel
            kernels = {"square": (k, k), "hor": (1, k), "ver": (k, 1)}
            for name in ("square",) + BRANCH_SETS[self.branches]:
                setattr(self, name + "_conv", Kernel(self.out_channels, self.in_channels // groups, kernels[name],
                                                     has_bias=self.has_bias and name == "square"))
            return
        # with 'same' the input is padded explicitly first (the amount depends on its size)
        dilation = self.dilation
        self.square_conv = self.branch_conv((k, k), self.padding, dilation)
        self.square_bn = self.new_bn(gamma_init=self.gamma_init)
        if self.use_hor:
            pads, self.hor_crop = geometry.sub_window(self.padding, k, dilation, self.row, 0, 1, k)
            self.hor_conv = self.branch_conv((1, k), pads, (1, dilation[1]))
            self.hor_bn = self.new_bn(gamma_init=self.gamma_init)
        if self.use_ver:
            pads, self.ver_crop = geometry.sub_window(self.padding, k, dilation, 0, self.col, k, 1)
            self.ver_conv = self.branch_conv((k, 1), pads, (dilation[0], 1))
            self.ver_bn = self.new_bn(gamma_init=self.gamma_init)
        self.crop_hor, self.crop_ver = any(self.hor_crop), any(self.ver_crop)

    @classmethod
    def from_conv(cls, conv, bn=None, gamma_init=None, branches="hv", branch_bn=True, position="center",
                  seed=0):
        """An ACB in place of ``conv`` (and of ``bn`` after it, if given), same geometry.

        The square branch starts from ``conv``'s kernel (and ``bn``'s values);
        the asymmetric kernels are drawn from N(0, s^2 k), s the square kernel's
        standard deviation (the variance an initialiser scaled by fan gives a
        kernel with k times fewer taps).
        """
        kh, opts = cls.options_of(conv, bn, branch_bn)
        block = cls(conv.in_channels, conv.out_channels, kh, gamma_init=gamma_init, branches=branches,
                    position=position, **opts)
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

    def conv_kernel(self):
        """The k x k kernel of the BN-free form: square + embedded asymmetric kernels (a Tensor)."""
        k = self.kernel_size
        w = self.square_conv.weight
        if self.use_hor:
            w = w + ops.pad(self.hor_conv.weight, (0, 0, self.row, k - 1 - self.row))
        if self.use_ver:
            w = w + ops.pad(self.ver_conv.weight, (self.col, k - 1 - self.col, 0, 0))
        return w

    def conv_bias(self):
        return self.square_conv.bias

    def forward_branches(self, x):
        x = self.pad_same(x)
        out = self.square_bn(self.square_conv(x))
        if self.use_hor:
            hx = geometry.crop(x, self.hor_crop) if self.crop_hor else x
            out = out + self.hor_bn(self.hor_conv(hx))
        if self.use_ver:
            vx = geometry.crop(x, self.ver_crop) if self.crop_ver else x
            out = out + self.ver_bn(self.ver_conv(vx))
        return out
