"""The conv + BN factory through which every model chooses plain or ACB layers."""
from mindspore import nn

from .. import fold
from .acb import ACBlock

BLOCK_TYPES = ("base", "acb")


def check_block_type(block_type, deploy=False):
    if block_type not in BLOCK_TYPES:
        raise ValueError(f"block_type must be one of {', '.join(BLOCK_TYPES)}, got {block_type!r}")
    if deploy and block_type != "base":
        raise ValueError(f"deploy=True builds the fully folded form (convs with bias, no BN, no ACB): "
                         f"block_type must be 'base', got {block_type!r}")


def acb_applies(kernel_size):
    """ACNet replaces every k x k conv + BN with 1 < k < 7: the 7 x 7 stem and 1 x 1 convs stay plain."""
    return 1 < kernel_size < 7


def conv_bn(in_channels, out_channels, kernel_size, stride=1, padding=None, dilation=1, groups=1,
            block_type="base", gamma_init=None, deploy=False):
    """Return the ``(conv, bn)`` pair for one conv + BN slot of a model.

    ``base``: a bias-free ``nn.Conv2d`` and an ``nn.BatchNorm2d`` (MindCV's layers).
    ``acb`` with 1 < k < 7: an :class:`ACBlock` (which holds its own BNs) and an
    ``nn.Identity`` in the BN slot, so the model's code and the BN slot's name do
    not change; the converter writes the folded bias back into that slot.
    ``deploy=True`` (block type ``base`` only): the fully folded form, an
    ``nn.Conv2d`` with bias and an ``nn.Identity`` in the BN slot; the converter
    (``--fold_bn``) folds the BN into that conv.
    """
    check_block_type(block_type, deploy)
    if padding is None:
        padding = dilation * (kernel_size // 2)
    if block_type == "acb" and acb_applies(kernel_size):
        return (ACBlock(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                        dilation=dilation, groups=groups, gamma_init=gamma_init), nn.Identity())
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, pad_mode="pad", padding=padding,
                     dilation=dilation, group=groups, has_bias=bool(deploy))
    return conv, nn.Identity() if deploy else nn.BatchNorm2d(out_channels, eps=fold.BN_EPS)
