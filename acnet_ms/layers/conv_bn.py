"""The conv + BN pair of a plain model (MindCV's layers and names)."""
from mindspore import nn


def conv_bn(in_channels, out_channels, kernel_size, stride=1, padding=None, dilation=1, groups=1):
    """A bias-free ``nn.Conv2d`` (explicit zero padding, by default ``dilation * (k // 2)``) and the
    ``nn.BatchNorm2d`` after it.  Models are written plain; ``acnet_ms.reparam.transform`` makes their ACB
    and fully folded forms."""
    if padding is None:
        padding = dilation * (kernel_size // 2)
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, pad_mode="pad", padding=padding,
                     dilation=dilation, group=groups, has_bias=False)
    return conv, nn.BatchNorm2d(out_channels)
