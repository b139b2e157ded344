"""Selective Kernel ResNets (SKNet, Li et al., CVPR 2019).

The networks are :class:`~acnet_ms.models.resnet.ResNet` (stem, stages,
down-sampling shortcuts, classifier, initialisation) with SK blocks, whose
cells carry MindCV's names: ``layerI.J.conv1`` is the :class:`SelectiveKernel`
of a basic block (``conv2`` a ``[conv, BN]`` sequence); in a bottleneck
``conv1`` / ``conv3`` are ``[1 x 1 conv, BN]`` sequences around the SK ``conv2``.

The models are plain; ``acnet_ms.reparam.transform`` makes every SK path (the dilated
one too) and every other 3 x 3 conv an ACB; the 7 x 7 stem, the 1 x 1 convs and
the attention's convs stay plain.

Two networks here differ from MindCV 0.3.0's (``mindcv.models.sknet``) and so have
names of their own (MindCV's names, ``skresnet50`` and ``skresnext50_32x4d``, build
MindCV's networks, whose checkpoints ours would load into while computing another function):

* ``skresnet50_relu``: MindCV's ``skresnet50`` with a ReLU after the first 1 x 1 conv + BN
  of every bottleneck, as in the paper (MindCV has none);
* ``sknet50``: the paper's SKNet-50, grouped, 32 groups x 4 channels per group at the
  first stage, with that ReLU (MindCV's ``skresnext50_32x4d`` has groups=1 and base
  width 64, i.e. is ``skresnet50`` with other attention settings and no input split).

``skresnet18`` and ``skresnet34`` are MindCV's models exactly (names, shapes, function), written
here because MindCV's ``SelectiveKernel`` builds a Python list in ``construct``, which MindSpore's
ONNX exporter cannot convert; these export.  They take the MindCV names in the registry.
"""
from mindspore import nn

from ..layers.conv_bn import conv_bn
from ..layers.selective_kernel import SelectiveKernel
from .registry import register_model
from .resnet import ResNet


class SKBasicBlock(nn.Cell):
    """SK conv (stride here) -> 3 x 3 conv + BN -> + shortcut -> ReLU."""
    expansion = 1

    def __init__(self, in_channels, channels, stride=1, down_sample=None, groups=1, base_width=64,
                 sk_kwargs=None):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("SKBasicBlock supports only groups=1 and base_width=64")
        self.conv1 = SelectiveKernel(in_channels, channels, stride=stride, **(sk_kwargs or {}))
        self.conv2 = nn.SequentialCell(list(conv_bn(channels, channels, 3)))
        self.relu = nn.ReLU()
        self.down_sample = down_sample

    def construct(self, x):
        identity = x
        out = self.conv2(self.conv1(x))
        if self.down_sample is not None:
            identity = self.down_sample(x)
        return self.relu(out + identity)


class SKBottleneck(nn.Cell):
    """1 x 1 conv + BN + ReLU -> SK conv (stride and groups here) -> 1 x 1 conv + BN -> + shortcut -> ReLU."""
    expansion = 4

    def __init__(self, in_channels, channels, stride=1, down_sample=None, groups=1, base_width=64,
                 sk_kwargs=None):
        super().__init__()
        width = int(channels * (base_width / 64.0)) * groups
        self.conv1 = nn.SequentialCell(list(conv_bn(in_channels, width, 1)))
        self.act1 = nn.ReLU()  # the paper's; MindCV 0.3.0 has none here
        self.conv2 = SelectiveKernel(width, width, stride=stride, groups=groups, **(sk_kwargs or {}))
        self.conv3 = nn.SequentialCell(list(conv_bn(width, channels * self.expansion, 1)))
        self.relu = nn.ReLU()
        self.down_sample = down_sample

    def construct(self, x):
        identity = x
        out = self.act1(self.conv1(x))
        out = self.conv3(self.conv2(out))
        if self.down_sample is not None:
            identity = self.down_sample(x)
        return self.relu(out + identity)


def _sknet(block, layers, sk_kwargs, **kwargs):
    return ResNet(block, layers, block_kwargs=dict(sk_kwargs=sk_kwargs), **kwargs)


@register_model(family="imagenet", mindcv="skresnet18")
def skresnet18(**kwargs):
    """SK-ResNet-18: basic SK blocks [2, 2, 2, 2], split input, attention 1/8 in 16s; = MindCV ``skresnet18``."""
    return _sknet(SKBasicBlock, (2, 2, 2, 2), dict(rd_ratio=1 / 8, rd_divisor=16, split_input=True), **kwargs)


@register_model(family="imagenet", mindcv="skresnet34")
def skresnet34(**kwargs):
    """SK-ResNet-34: basic SK blocks [3, 4, 6, 3], split input, attention 1/8 in 16s; = MindCV ``skresnet34``."""
    return _sknet(SKBasicBlock, (3, 4, 6, 3), dict(rd_ratio=1 / 8, rd_divisor=16, split_input=True), **kwargs)


@register_model(family="imagenet")
def skresnet50_relu(**kwargs):
    """SK-ResNet-50 with the paper's ReLU after the first 1 x 1 conv: SK bottlenecks [3, 4, 6, 3],
    split input, attention 1/16 rounded to 8s.

    MindCV's ``skresnet50`` has the same names and shapes but no ReLU after the
    first 1 x 1 conv, so its checkpoints load into this model and compute another function.
    """
    return _sknet(SKBottleneck, (3, 4, 6, 3), dict(rd_ratio=1 / 16, rd_divisor=8, split_input=True), **kwargs)


@register_model(family="imagenet")
def sknet50(**kwargs):
    """SKNet-50 (SK-ResNeXt-50 32x4d as in the paper): grouped SK bottlenecks [3, 4, 6, 3], whole
    input to each path, attention 1/16 rounded to 32s.

    MindCV's ``skresnext50_32x4d`` is not grouped (groups=1, width 64 per stage-1
    block), so shapes differ wherever the block width enters.
    """
    return _sknet(SKBottleneck, (3, 4, 6, 3), dict(rd_ratio=1 / 16, rd_divisor=32, split_input=False),
                  groups=32, base_width=4, **kwargs)
