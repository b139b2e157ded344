"""Selective Kernel convolution (SKNet, Li et al., CVPR 2019), plain or with ACB paths.

M parallel paths (by default a 3 x 3 conv and a 3 x 3 conv with dilation 2,
i.e. a 5 x 5 receptive field kept as a 3 x 3 kernel), each conv + BN + ReLU,
are fused by a channel attention computed from their sum:

    U = sum_m U_m                      s = mean over H, W of U
    z = ReLU(BN(W_reduce s))           a = softmax over m of (W_select z), split into M groups of C
    V = sum_m a_m * U_m

Cell and parameter names follow MindCV's ``SelectiveKernel`` (``paths.0.features.0.weight``,
``paths.0.features.1.gamma``, ``attn.fc_reduce.weight``, ``attn.bn.*``,
``attn.fc_select.weight``), so it shares MindCV's checkpoints.  The Cell is
plain; ``acnet_ms.reparam.transform`` turns each path's conv (the dilated one too) into
an ACB and folds every conv + BN, the attention's ``fc_reduce`` + ``bn``
included, for the fully folded form.
"""
from mindspore import nn, ops

from .conv_bn import conv_bn


def _positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"SelectiveKernel: {what} must be a positive integer, got {value!r}")
    return value


def attn_channels_for(channels, rd_ratio, rd_divisor):
    """Width of the attention bottleneck, as MindCV computes it (``make_divisible``).

    ``channels * rd_ratio`` rounded to the nearest multiple of ``rd_divisor``
    (halves up), at least ``rd_divisor``, and raised by one more ``rd_divisor``
    where the rounding lost more than 10 %.  Note: to the *nearest* multiple,
    not up (128 / 8 = 16 -> 16, but 34 -> 32 with divisor 16).
    """
    target = channels * rd_ratio
    width = max(rd_divisor, int(target + rd_divisor / 2) // rd_divisor * rd_divisor)
    if width < 0.9 * target:
        width += rd_divisor
    return width


def path_geometry(kernel_size, dilation, keep_3x3):
    """``[(kernel, dilation), ...]`` of the paths.

    ``kernel_size`` is one odd size >= 3 (two paths of it) or a list of them
    (one path each; the default is [3, 5]).  With ``keep_3x3`` a k x k path
    becomes a 3 x 3 conv with dilation ``dilation * (k - 1) // 2``: the same
    receptive field with 9 taps.
    """
    if kernel_size is None:
        kernel_size = [3, 5]
    elif not isinstance(kernel_size, (list, tuple)):
        kernel_size = [kernel_size] * 2
    if len(kernel_size) < 1:
        raise ValueError("SelectiveKernel: kernel_size must name at least one path")
    for k in kernel_size:
        if isinstance(k, bool) or not isinstance(k, int) or k < 3 or k % 2 == 0:
            raise ValueError(f"SelectiveKernel: every kernel size must be an odd integer >= 3, "
                             f"got {list(kernel_size)}")
    if keep_3x3:
        return [(3, dilation * (k - 1) // 2) for k in kernel_size]
    return [(k, dilation) for k in kernel_size]


class ConvBnAct(nn.Cell):
    """conv + BN + ReLU as one ``features`` sequence (MindCV's ``Conv2dNormActivation`` names).

    Padding is ``((stride - 1) + dilation * (k - 1)) // 2``, as MindCV's.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, dilation=1, groups=1):
        super().__init__()
        padding = ((stride - 1) + dilation * (kernel_size - 1)) // 2
        conv, bn = conv_bn(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                           dilation=dilation, groups=groups)
        self.features = nn.SequentialCell([conv, bn, nn.ReLU()])

    def construct(self, x):
        return self.features(x)


class SelectiveKernelAttn(nn.Cell):
    """Per-path, per-channel weights (B, M, C, 1, 1) from the paths' stacked outputs (B, M, C, H, W)."""

    def __init__(self, channels, num_paths, attn_channels):
        super().__init__()
        self.num_paths = num_paths
        self.channels = channels
        self.fc_reduce, self.bn = conv_bn(channels, attn_channels, 1)
        self.act = nn.ReLU()
        self.fc_select = nn.Conv2d(attn_channels, channels * num_paths, 1, has_bias=False)
        self.softmax = nn.Softmax(axis=1)

    def construct(self, x):
        s = ops.mean(x.sum(1), (2, 3), True)
        z = self.act(self.bn(self.fc_reduce(s)))
        logits = self.fc_select(z).reshape((z.shape[0], self.num_paths, self.channels, 1, 1))
        return self.softmax(logits)


class SelectiveKernel(nn.Cell):
    """Selective Kernel convolution: M conv + BN + ReLU paths fused by attention.

    Args:
        in_channels, out_channels: module input / output channels (``out_channels=None``: same as input).
        kernel_size: see :func:`path_geometry` (default ``[3, 5]``).
        stride, dilation, groups: of every path (dilation multiplies each path's own).
        rd_ratio, rd_divisor, rd_channels: attention width, ``rd_channels`` if given,
            else :func:`attn_channels_for` ``(out_channels, rd_ratio, rd_divisor)``.
        keep_3x3: realise larger kernels as dilated 3 x 3 ones.
        split_input: give each path its own ``in_channels / M`` slice of the input
            (consecutive slices, path m gets slice m) instead of the whole input.

    Invalid combinations raise ValueError here rather than a shape error in the graph.
    """

    def __init__(self, in_channels, out_channels=None, kernel_size=None, stride=1, dilation=1, groups=1,
                 rd_ratio=1.0 / 16, rd_channels=None, rd_divisor=8, keep_3x3=True, split_input=True):
        super().__init__()
        _positive_int(in_channels, "in_channels")
        out_channels = in_channels if out_channels is None else _positive_int(out_channels, "out_channels")
        for value, what in ((stride, "stride"), (dilation, "dilation"), (groups, "groups"),
                            (rd_divisor, "rd_divisor")):
            _positive_int(value, what)
        geometry = path_geometry(kernel_size, dilation, keep_3x3)
        num_paths = len(geometry)
        path_in = in_channels
        if split_input:
            if in_channels % num_paths:
                raise ValueError(f"SelectiveKernel: split_input needs in_channels ({in_channels}) divisible "
                                 f"by the number of paths ({num_paths})")
            path_in = in_channels // num_paths
        if path_in % groups or out_channels % groups:
            raise ValueError(f"SelectiveKernel: groups={groups} must divide each path's input channels "
                             f"({path_in}) and out_channels ({out_channels})")
        if rd_channels is None:
            if isinstance(rd_ratio, bool) or not isinstance(rd_ratio, (int, float)) or not rd_ratio > 0:
                raise ValueError(f"SelectiveKernel: rd_ratio must be a positive number, got {rd_ratio!r}")
            rd_channels = attn_channels_for(out_channels, rd_ratio, rd_divisor)
        _positive_int(rd_channels, "rd_channels")

        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_paths, self.split_input = num_paths, split_input
        self.path_in, self.attn_channels = path_in, rd_channels
        self.geometry = geometry
        self.paths = nn.CellList([
            ConvBnAct(path_in, out_channels, k, stride=stride, dilation=d, groups=groups)
            for k, d in geometry])
        self.attn = SelectiveKernelAttn(out_channels, num_paths, rd_channels)

    def construct(self, x):
        outs = ()  # a tuple, not a list: the ONNX exporter has no list constructor
        if self.split_input:
            for i, path in enumerate(self.paths):
                outs += (path(x[:, i * self.path_in:(i + 1) * self.path_in]),)
        else:
            for path in self.paths:
                outs += (path(x),)
        stacked = ops.stack(outs, axis=1)
        return (stacked * self.attn(stacked)).sum(1)

    def extend_repr(self):
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"paths={self.geometry} (kernel, dilation), split_input={self.split_input}, "
                f"attn_channels={self.attn_channels}")
