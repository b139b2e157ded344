"""Diverse Branch Block (DBB; Ding et al., "Diverse Branch Block: Building a Convolution as an
Inception-like Unit", CVPR 2021).

A k x k conv (+ BN) trained as four branches whose sum folds into one k x k conv:

* ``dbb_origin``: the k x k conv + BN;
* ``dbb_1x1``: a 1 x 1 conv + BN (not in depthwise blocks);
* ``dbb_avg``: a 1 x 1 conv + BN-and-pad (not in depthwise blocks), k x k average pooling, BN (``avgbn``);
* ``dbb_1x1_kxk``: a 1 x 1 conv (``idconv1``, identity-initialised, when it keeps the channel count;
  ``conv1`` otherwise: depthwise blocks widen to twice the input channels) + BN-and-pad, then a k x k
  conv + BN.

The BN-and-pad pads its BN's output with what that BN gives for a zero input,
``beta - mean * gamma / sqrt(var + eps)`` from the moving statistics (no gradient,
as the original), so in eval mode the 1 x 1 stage followed by the k x k stage
is exactly one k x k conv over the zero-padded input (``identities.merge_sequential``).
The sub-cells carry the original PyTorch block's names (its BN fields as
MindSpore's: ``gamma``, ``beta``, ``moving_mean``, ``moving_variance``; the
BN-and-pad's BN is its ``bn``: ``dbb_avg.bn.bn.gamma``), so a converted
state dict of the original loads by name.

Beyond the original (which asserts ``padding == k // 2``), every branch samples
the k x k conv's grid for any stride, padding (``padding < k // 2`` included:
the 1 x 1 branch crops its input instead, :func:`geometry.sub_window`),
dilation, groups and ``pad_mode`` (``same``: the pads are computed from the
input's size, as MindSpore's).
"""
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common import dtype as mstype

from .. import geometry, identities
from ..cell import BranchBNBlock, Kernel, keyword_options


def _inner(cell):
    """``cell`` itself, or the cell a mixed-precision wrapper holds (MindSpore's ``_backbone``, MindCV's ``_op``)."""
    for attr in ("_backbone", "_op"):
        if isinstance(getattr(cell, attr, None), nn.Cell):
            return getattr(cell, attr)
    return cell


class PadBatchNorm(nn.BatchNorm2d):
    """A BatchNorm2d whose output is padded with the value it gives for a zero input in eval mode
    (moving statistics; no gradient), by ``pads`` (top, bottom, left, right), or, given ``same=(k, stride,
    dilation)``, by what MindSpore's 'same' pads an input of its input's size with.

    Being the BN itself (one input, as mixed-precision wrappers call a BN), mixed precision keeps it in
    float32 like any BN.
    """

    def __init__(self, num_features, pads=(0, 0, 0, 0), same=None, **kwargs):
        super().__init__(num_features, **kwargs)
        self.pads, self.same = tuple(pads), same

    def construct(self, x):
        pads = geometry.same_pads(x.shape[2], x.shape[3], *self.same) if self.same else self.pads
        y = super().construct(x)
        value = self.beta - self.moving_mean * self.gamma / ops.sqrt(self.moving_variance + self.eps)
        return geometry.pad_with(y, pads, ops.stop_gradient(value))


class BNAndPad(nn.Cell):
    """The original's ``BNAndPadLayer``: its BN is ``bn`` (``.bn.gamma``, ...); see :class:`PadBatchNorm`."""

    def __init__(self, channels, pads=(0, 0, 0, 0), same=None, **bn):
        super().__init__()
        self.bn = PadBatchNorm(channels, pads, same, **bn)

    def construct(self, x):
        return self.bn(x)


class ConvBN(nn.Cell):
    """``bn(conv(x))``, the original's ``conv_bn`` (``conv``, ``bn``)."""

    def __init__(self, conv, bn):
        super().__init__()
        self.conv, self.bn = conv, bn

    def construct(self, x):
        return self.bn(self.conv(x))


class IdentityBasedConv1x1(nn.Cell):
    """A 1 x 1 conv whose kernel is ``weight + I`` (I: the identity, per group); ``weight`` starts at zero."""

    def __init__(self, channels, groups=1):
        super().__init__()
        self.weight = Parameter(Tensor(np.zeros((channels, channels // groups, 1, 1), np.float32)), name="weight")
        self.identity = Tensor(identities.identity_kernel(channels, channels // groups, 1, np.float32))
        self.conv2d = ops.Conv2D(channels, 1, group=groups)

    def kernel(self):
        return self.weight + self.identity

    def construct(self, x):
        return self.conv2d(x, ops.cast(self.kernel(), x.dtype))


class FixedAverage(nn.Cell):
    """k x k average pooling (zeros counted) with a dilation: a depthwise conv of fixed weights 1 / k^2."""

    def __init__(self, channels, size, stride, dilation):
        super().__init__()
        self.kernel = Tensor(np.full((channels, 1, size, size), 1.0 / size ** 2, np.float32))
        self.conv2d = ops.Conv2D(channels, size, stride=stride, dilation=dilation, group=channels)

    def construct(self, x):
        return self.conv2d(x, ops.cast(self.kernel, x.dtype))


class AvgBranch(nn.Cell):
    """``avgbn(avg(pad(bn(conv(x)))))``; without ``conv`` (depthwise) the input is padded with zeros."""

    def __init__(self, conv, bn, avg, avgbn):
        super().__init__()
        self.has_conv = conv is not None
        if self.has_conv:
            self.conv, self.bn = conv, bn
        self.avg, self.avgbn = avg, avgbn

    def construct(self, x, pads):
        if self.has_conv:
            x = self.bn(self.conv(x))  # padded by its BN-and-pad
        else:
            x = geometry.pad_zeros(x, pads)
        return self.avgbn(self.avg(x))


class SeqBranch(nn.Cell):
    """``bn2(conv2(pad(bn1(first(x)))))``, ``first`` being ``idconv1`` or ``conv1``."""

    def __init__(self, first, identity, bn1, conv2, bn2):
        super().__init__()
        self.identity = identity
        if identity:
            self.idconv1 = first
        else:
            self.conv1 = first
        self.bn1, self.conv2, self.bn2 = bn1, conv2, bn2

    def construct(self, x):
        x = self.idconv1(x) if self.identity else self.conv1(x)
        return self.bn2(self.conv2(self.bn1(x)))


class Holder(nn.Cell):
    """Named parameter holders (the branch-BN-free form keeps the original's names without its cells)."""

    def __init__(self, **cells):
        super().__init__()
        for name, cell in cells.items():
            setattr(self, name, cell)


def merge_1x1_kxk(first, second, groups):
    """``identities.merge_sequential``'s kernel in MindSpore ops: (D, C/g, 1, 1) then (O, D/g, k, k) -> (O, C/g, k, k)."""
    d, cpg = first.shape[0], first.shape[1]
    o, dpg, kh, kw = second.shape
    og = o // groups
    a = second.reshape((groups, og, dpg, kh * kw)).transpose(0, 1, 3, 2).reshape((groups, og * kh * kw, dpg))
    m = ops.bmm(a, first.reshape((groups, d // groups, cpg)))
    return m.reshape((groups, og, kh * kw, cpg)).transpose(0, 1, 3, 2).reshape((o, cpg, kh, kw))


def _uniform(rng, shape, dtype=np.float32):
    """PyTorch's (and the original's) default conv init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / np.sqrt(int(np.prod(shape[1:])))
    return rng.uniform(-bound, bound, shape).astype(dtype)


class DiverseBranchBlock(BranchBNBlock):
    """k x k conv (+ BN) trained as a Diverse Branch Block, deployed as one conv ``fused_conv``.

    Args:
        padding: an int, ``(top, bottom, left, right)`` or ``None`` (keep the size at stride 1); ignored
            with ``pad_mode="same"`` (MindSpore's: output ceil(input / stride), the odd row/column at the
            bottom/right); ``"valid"`` is padding 0.
        internal_channels: channels between the 1 x 1 and the k x k conv of ``dbb_1x1_kxk`` (default: the
            input channels, ``idconv1``; twice them for a depthwise block, ``conv1``).
        branch_bn: a BN per branch (the original).  ``False``: the branches carry no BN (sites with
            nowhere to put a folded bias); their sum is linear, so it trains as ONE conv over the kernel
            the branches sum to, rebuilt at every step (the same function and gradients as the
            branches, at the cost of one conv); a depthwise block then has no average branch (without
            its BN it would add a constant kernel and no parameter).
        has_bias: a bias (only without branch BNs, which carry the bias otherwise).
        gamma_init: initial gamma of the last BN of every branch, ``dbb_origin``'s included (the
            original's ``init_gamma``; ACNet's CIFAR recipe scales ACB's three alike), except that 0 is
            the original's ``single_init``: ``dbb_origin`` keeps its start, the others start at 0
            (None: every gamma 1, ``dbb_origin`` the model's BN's).  ``eps``, ``momentum``: those of every BN.
    """

    kind = "dbb"
    info_fields = ("branch_bn", "has_bias", "eps", "groups", "internal", "depthwise", "identity", "kernel_size")
    repr_fields = ("internal", "branch_bn")

    @keyword_options("pad_mode", "internal_channels", "branch_bn", "has_bias", "gamma_init", "deploy", "eps",
                     "momentum")
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=None, dilation=1, groups=1, *,
                 pad_mode="pad", internal_channels=None, branch_bn=True, has_bias=False, gamma_init=None,
                 deploy=False, eps=identities.BN_EPS, momentum=0.9):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         pad_mode=pad_mode, has_bias=has_bias, deploy=deploy, branch_bn=branch_bn, eps=eps,
                         momentum=momentum)
        self.depthwise = groups == in_channels == out_channels
        internal = internal_channels or (2 * in_channels if self.depthwise else in_channels)
        if internal % groups:
            raise ValueError(f"DiverseBranchBlock: internal_channels={internal} is not a multiple of groups={groups}")
        self.internal, self.gamma_init = internal, gamma_init
        self.identity = internal == in_channels
        self.with_one = not self.depthwise
        self.with_avg = self.branch_bn or not self.depthwise
        self.build()

    def build_training(self):
        k, c = self.kernel_size, self.kernel_size // 2
        in_channels, out_channels, internal = self.in_channels, self.out_channels, self.internal
        cpg, dpg = in_channels // self.groups, internal // self.groups
        if self.one_conv:
            self.dbb_origin = Holder(conv=Kernel(out_channels, cpg, (k, k), has_bias=self.has_bias))
            if self.with_one:
                self.dbb_1x1 = Holder(conv=Kernel(out_channels, cpg, (1, 1)))
            if self.with_avg:
                self.dbb_avg = Holder(conv=Kernel(out_channels, cpg, (1, 1)))
            first = Kernel(internal, cpg, (1, 1))
            if self.identity:
                first.weight.set_data(Tensor(np.zeros(first.weight.shape, np.float32)))
            self.identity_kernel = Tensor(identities.identity_kernel(internal, cpg, 1, np.float32))
            self.centre = geometry.centre_tap(k)
            self.dbb_1x1_kxk = Holder(**{"idconv1" if self.identity else "conv1": first},
                                      conv2=Kernel(out_channels, dpg, (k, k)))
            return
        # gamma_init: every branch's last BN; dbb_origin's too unless it is 0 (the original's single_init)
        last, stride, dilation = self.gamma_init, self.stride, self.dilation
        pad = dict(eps=self.eps, momentum=self.momentum, pads=self.padding,
                   same=(k, stride, dilation) if self.same else None)
        self.dbb_origin = ConvBN(geometry.block_conv(self, False), self.new_bn(gamma_init=last or None))
        if self.with_one:
            one_pads, self.one_crop = geometry.sub_window(self.padding, k, dilation, c, c, 1, 1)
            self.dbb_1x1 = ConvBN(self.branch_conv(1, one_pads, stride=stride), self.new_bn(gamma_init=last))
        avg = nn.AvgPool2d(k, stride) if dilation == (1, 1) else FixedAverage(out_channels, k, stride, dilation)
        if self.depthwise:
            self.dbb_avg = AvgBranch(None, None, avg, self.new_bn(gamma_init=last))
        else:
            self.dbb_avg = AvgBranch(self.branch_conv(1, stride=1), BNAndPad(out_channels, **pad), avg,
                                     self.new_bn(gamma_init=last))
        first = IdentityBasedConv1x1(in_channels, self.groups) if self.identity else \
            self.branch_conv(1, stride=1, out_channels=internal)
        self.dbb_1x1_kxk = SeqBranch(first, self.identity, BNAndPad(internal, **pad),
                                     self.branch_conv(k, 0, dilation, in_channels=internal),
                                     self.new_bn(gamma_init=last))

    @classmethod
    def from_conv(cls, conv, bn=None, branch_bn=True, gamma_init=None, seed=0):
        """A DBB in place of ``conv`` (and of ``bn`` after it, if given), same geometry.

        ``dbb_origin`` starts from ``conv``'s kernel and ``bn``'s values (with branch BNs and no ``bn``, a
        bias of ``conv`` becomes ``dbb_origin.bn``'s beta); the other convs are drawn as the original's
        (PyTorch's default, U(+-1/sqrt(fan_in)), from ``seed``), ``idconv1`` starts at the identity.
        """
        kh, opts = cls.options_of(conv, bn, branch_bn)
        block = cls(conv.in_channels, conv.out_channels, kh, gamma_init=gamma_init, **opts)
        rng = np.random.default_rng(seed)
        for name, param in block.parameters_and_names():
            if name.endswith(".weight") and "idconv1" not in name and len(param.shape) == 4:
                param.set_data(Tensor(_uniform(rng, param.shape)))
        origin = _inner(block.dbb_origin.conv)
        origin.weight.set_data(Tensor(conv.weight.asnumpy()))
        if not branch_bn:
            if conv.has_bias:
                origin.bias.set_data(Tensor(conv.bias.asnumpy()))
            return block
        target = _inner(block.dbb_origin.bn)
        if bn is not None:
            fields = identities.BN_FIELDS if not gamma_init else ("moving_mean", "moving_variance")
            for field in fields:
                getattr(target, field).set_data(Tensor(getattr(bn, field).asnumpy()))
        elif conv.has_bias:
            target.beta.set_data(Tensor(conv.bias.asnumpy()))
        return block

    # ------------------------------------------------------------ forward

    def conv_kernel(self):
        """The k x k kernel the branch-BN-free form sums to (a Tensor), rebuilt from its parameters: in
        float32 in graph mode whatever mixed precision made of them, in the cell's type in PyNative (which
        casts each op's inputs)."""
        k = self.kernel_size

        def f32(param):
            return ops.cast(param, mstype.float32)

        w = f32(self.dbb_origin.conv.weight)
        if self.with_one:
            w = w + f32(self.dbb_1x1.conv.weight) * self.centre
        if self.with_avg:
            w = w + ops.tile(f32(self.dbb_avg.conv.weight), (1, 1, k, k)) / float(k * k)
        if self.identity:
            first = f32(self.dbb_1x1_kxk.idconv1.weight) + self.identity_kernel
        else:
            first = f32(self.dbb_1x1_kxk.conv1.weight)
        return w + merge_1x1_kxk(first, f32(self.dbb_1x1_kxk.conv2.weight), self.groups)

    def conv_bias(self):
        return self.dbb_origin.conv.bias

    def forward_branches(self, x):
        pads = self.pads_for(x)
        out = self.dbb_origin(x)
        if self.with_one:
            if self.same:
                k, c = self.kernel_size, self.kernel_size // 2
                one_pads, crop = geometry.sub_window(pads, k, self.dilation, c, c, 1, 1)
                out = out + self.dbb_1x1(geometry.crop(geometry.pad_zeros(x, one_pads), crop))
            else:
                out = out + self.dbb_1x1(geometry.crop(x, self.one_crop) if any(self.one_crop) else x)
        out = out + self.dbb_avg(x, pads)
        return out + self.dbb_1x1_kxk(x)
