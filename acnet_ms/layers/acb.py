"""Asymmetric Convolution Block (ACNet, Ding et al., ICCV 2019)."""
import time

from mindspore import Parameter, Tensor, nn

from .. import fold


def check_kernel_size(kernel_size, what="kernel_size"):
    """ACBs need a square, odd kernel of at least 3 so that a centre row/column exists."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 3 \
            or kernel_size % 2 == 0:
        raise ValueError(f"{what} must be an odd integer >= 3 for an ACB, got {kernel_size!r}")


class ACBlock(nn.Cell):
    """k x k conv + BN, trained as three parallel branches and deployed as one conv.

    Training form: ``square_conv``/``square_bn`` (k x k), ``hor_conv``/``hor_bn``
    (1 x k) and ``ver_conv``/``ver_bn`` (k x 1); the output is the sum of the
    three BN outputs.  Each asymmetric window is placed on the centre row
    (column) of the square window for any stride, dilation, groups and padding:
    the 1 x k branch pads its rows by ``padding - dilation * (k // 2)``, and where
    that is negative it crops as many rows off each side of its input instead.

    Inference form (``deploy=True`` or after :meth:`switch_to_deploy`): one
    k x k conv with bias, ``fused_conv``, computing the same function as the
    training form in eval mode.

    Args:
        padding: zero padding of the square conv on every side; ``None`` keeps
            the spatial size at stride 1 (``dilation * (k // 2)``).
        gamma_init: initial gamma of all three BNs (ACNet's CIFAR recipe uses 1/3);
            ``None`` keeps MindSpore's default of 1.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=None, dilation=1,
                 groups=1, gamma_init=None, deploy=False):
        super().__init__()
        check_kernel_size(kernel_size)
        if padding is None:
            padding = dilation * (kernel_size // 2)
        if padding < 0 or stride < 1 or dilation < 1:
            raise ValueError(f"ACBlock needs padding >= 0, stride >= 1 and dilation >= 1, "
                             f"got padding={padding}, stride={stride}, dilation={dilation}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"ACBlock: groups={groups} must divide in_channels={in_channels} "
                             f"and out_channels={out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.groups = dilation, groups
        self.deploy = deploy
        if deploy:
            self.fused_conv = self._conv(kernel_size, padding, dilation, has_bias=True)
            self.crop = 0
            return
        # offset of the asymmetric window against the square one's centre row/column
        side = padding - dilation * (kernel_size // 2)
        self.crop = max(0, -side)
        side = max(0, side)
        bn = dict(gamma_init=gamma_init) if gamma_init is not None else {}
        self.square_conv = self._conv(kernel_size, padding, dilation)
        self.square_bn = nn.BatchNorm2d(out_channels, eps=fold.BN_EPS, **bn)
        self.hor_conv = self._conv((1, kernel_size), (side, side, padding, padding), (1, dilation))
        self.hor_bn = nn.BatchNorm2d(out_channels, eps=fold.BN_EPS, **bn)
        self.ver_conv = self._conv((kernel_size, 1), (padding, padding, side, side), (dilation, 1))
        self.ver_bn = nn.BatchNorm2d(out_channels, eps=fold.BN_EPS, **bn)

    def _conv(self, kernel, padding, dilation, has_bias=False):
        return nn.Conv2d(self.in_channels, self.out_channels, kernel, stride=self.stride, pad_mode="pad",
                         padding=padding, dilation=dilation, group=self.groups, has_bias=has_bias)

    def construct(self, x):
        if self.deploy:
            return self.fused_conv(x)
        out = self.square_bn(self.square_conv(x))
        if self.crop > 0:
            out = out + self.hor_bn(self.hor_conv(x[:, :, self.crop:-self.crop, :]))
            out = out + self.ver_bn(self.ver_conv(x[:, :, :, self.crop:-self.crop]))
        else:
            out = out + self.hor_bn(self.hor_conv(x))
            out = out + self.ver_bn(self.ver_conv(x))
        return out

    def branch_arrays(self, branch):
        """``(kernel, gamma, beta, moving_mean, moving_variance)`` of one branch as numpy arrays."""
        conv, bn = getattr(self, branch + "_conv"), getattr(self, branch + "_bn")
        return (conv.weight.asnumpy(),) + tuple(getattr(bn, f).asnumpy() for f in fold.BN_FIELDS)

    def get_equivalent_kernel_bias(self):
        """The single conv's (kernel, bias) that equals this block in eval mode, as numpy arrays."""
        if self.deploy:
            return self.fused_conv.weight.asnumpy(), self.fused_conv.bias.asnumpy()
        return fold.fold_acb(*(self.branch_arrays(b) for b in fold.BRANCHES), eps=fold.BN_EPS)

    def switch_to_deploy(self):
        """Replace the three branches by ``fused_conv`` in place (no-op when already deployed)."""
        if self.deploy:
            return
        kernel, bias = self.get_equivalent_kernel_bias()
        conv = self._conv(self.kernel_size, self.padding, self.dilation, has_bias=True)
        conv.weight = Parameter(Tensor(kernel), name="fused_conv.weight")
        conv.bias = Parameter(Tensor(bias), name="fused_conv.bias")
        for branch in fold.BRANCHES:
            delattr(self, branch + "_conv")
            delattr(self, branch + "_bn")
        self.fused_conv = conv
        self.deploy = True
        self.crop = 0
        _refresh_graph(self)

    def extend_repr(self):
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, groups={self.groups}, deploy={self.deploy}")


def _refresh_graph(net):
    """Make graph mode compile ``net`` anew after its structure changed in place.

    MindSpore keys its compiled-graph cache on each Cell's creation time; a
    Cell whose sub-cells were swapped would otherwise keep running its old graph.
    """
    stamp = time.time_ns()
    for i, (_, cell) in enumerate(net.cells_and_names()):
        object.__setattr__(cell, "_create_time", stamp + i)


def switch_to_deploy(net):
    """Switch every re-parameterizable block of ``net`` to its inference form, in place.

    Parameter names are rewritten to their full paths (``layer1.0.conv1.fused_conv.weight``)
    so that the switched network saves and loads like any other.  Returns ``net``.
    """
    for _, cell in list(net.cells_and_names()):
        if isinstance(cell, ACBlock):
            cell.switch_to_deploy()
    for name, param in net.parameters_and_names():
        param.name = name
    _refresh_graph(net)
    return net

