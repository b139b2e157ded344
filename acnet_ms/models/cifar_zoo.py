"""ACNet's own CIFAR models as plain MindSpore networks: Cifar-quick with BN, VGG-16, WRN-16-8.

The layouts follow the original ACNet repository (DingXiaoH/ACNet):
``base_model/cfqk.py`` (``cfqkbnc``), ``base_model/vgg.py`` (``vc``) and
``base_model/wrn.py`` (``wrnc16plain``), with the widths of ``constants.py``
(``CFQK_ORIGIN_DEPS``, ``VGG_ORIGIN_DEPS``) and of ``wrn.py`` itself.
All three expect 32 x 32 inputs (the flatten sizes of ``cfqkbnc`` and ``vc`` depend on it).

These are plain networks: every conv is an ``nn.Conv2d`` without bias, every
normalisation an ``nn.BatchNorm2d`` (eps 1e-5, as the original).  Nothing here
knows about ACBs; turning square convs into ACBs is left to a separate,
model-agnostic transform.

* ``cfqkbnc`` and ``vc`` are ``features`` (a ``SequentialCell`` of conv, BN,
  ReLU and pooling cells, MindCV's VGG naming: ``features.0.weight``,
  ``features.1.gamma``, ...) followed by ``classifier`` (Dense, ReLU, Dense).
  Every conv is followed directly by its own BN.
* ``wrnc16`` is pre-activation: the stem conv ``conv1`` has no BN of its own,
  and inside the blocks every conv is preceded by its BN + ReLU
  (``layerS.B.bn1 -> relu -> conv1``, ``bn2 -> relu -> conv2``; the first block
  of each stage has a projection shortcut ``shortcut_bn -> relu -> shortcut_conv``
  with its own BN).  A last BN ``bn`` (no ReLU, as the original) precedes the
  global average pool and ``classifier``.

Initialisation: MindSpore's defaults, i.e. ``HeUniform(sqrt(5))`` weights and
``Uniform(1/sqrt(fan_in))`` biases for ``nn.Conv2d`` / ``nn.Dense``, BN gamma 1,
beta 0.  These are PyTorch's defaults, which is what the original uses (its
training script applies no custom initialisation).
"""
from mindspore import nn, ops

from .registry import register_model

__all__ = ["cfqkbnc", "vc", "wrnc16", "CIFAR_ZOO"]

CFQK_WIDTHS = (32, 32, 64)
VGG16_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
VGG16_POOL_AFTER = (2, 4, 7, 10, 13)      # a 2 x 2 max-pool after these convs (1-based)
WRN16_8_STEM = 16
WRN16_8_WIDTHS = (128, 256, 512)          # 16 * k, 32 * k, 64 * k with k = 8
WRN16_BLOCKS = (2, 2, 2)                  # depth 16 = 6 * 2 + 4


def _check(name, num_classes, in_channels, kwargs):
    if kwargs:
        raise ValueError(f"{name}: unknown arguments {', '.join(sorted(kwargs))}")
    for arg, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: {arg} must be a positive integer, got {value!r}")


def _conv(in_channels, out_channels, kernel_size, stride=1):
    """A square conv without bias, zero padding k // 2."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, pad_mode="pad",
                     padding=kernel_size // 2, has_bias=False)


class CifarQuickBN(nn.Cell):
    """Cifar-quick with BN (``cfqkbnc``).

    32 -> conv5x5(32)-BN-ReLU -> max-pool 3/2 -> 15 -> conv5x5(32)-BN-ReLU -> avg-pool 3/2 -> 7
    -> conv5x5(64)-BN-ReLU -> avg-pool 3/2 -> 3 -> flatten (3 * 3 * 64) -> FC 64 -> ReLU -> FC classes.
    Pools have no padding and round down (PyTorch's defaults in the original).
    """

    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        c1, c2, c3 = CFQK_WIDTHS
        self.features = nn.SequentialCell([
            _conv(in_channels, c1, 5), nn.BatchNorm2d(c1), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="valid"),
            _conv(c1, c2, 5), nn.BatchNorm2d(c2), nn.ReLU(),
            nn.AvgPool2d(kernel_size=3, stride=2, pad_mode="valid"),
            _conv(c2, c3, 5), nn.BatchNorm2d(c3), nn.ReLU(),
            nn.AvgPool2d(kernel_size=3, stride=2, pad_mode="valid"),
        ])
        self.flatten = nn.Flatten()
        self.num_features = 3 * 3 * c3
        self.classifier = nn.SequentialCell([nn.Dense(self.num_features, 64), nn.ReLU(), nn.Dense(64, num_classes)])

    def construct(self, x):
        return self.classifier(self.flatten(self.features(x)))


class VGGCifar(nn.Cell):
    """VGG-16 with BN for 32 x 32 inputs (``vc``).

    13 conv3x3-BN-ReLU (64, 64 | 128, 128 | 256 x 3 | 512 x 3 | 512 x 3) with a 2 x 2 max-pool
    after each group: 32 -> 16 -> 8 -> 4 -> 2 -> 1; flatten (512) -> FC 512 -> ReLU -> FC classes.
    No dropout (the original has none).
    """

    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        layers, channels = [], in_channels
        for i, width in enumerate(VGG16_WIDTHS, start=1):
            layers += [_conv(channels, width, 3), nn.BatchNorm2d(width), nn.ReLU()]
            if i in VGG16_POOL_AFTER:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, pad_mode="valid"))
            channels = width
        self.features = nn.SequentialCell(layers)
        self.flatten = nn.Flatten()
        self.num_features = channels
        self.classifier = nn.SequentialCell([nn.Dense(channels, 512), nn.ReLU(), nn.Dense(512, num_classes)])

    def construct(self, x):
        return self.classifier(self.flatten(self.features(x)))


class PreActBlock(nn.Cell):
    """Pre-activation wide basic block.

    out = conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut(x), no activation after the sum.
    The stride sits on ``conv1``; ``shortcut`` is the identity, or for the first block of a
    stage ``shortcut_conv(relu(shortcut_bn(x)))`` (1 x 1, same stride) with a BN of its own.
    """

    def __init__(self, in_channels, channels, stride=1, projection=False):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv(in_channels, channels, 3, stride=stride)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = _conv(channels, channels, 3)
        self.relu = nn.ReLU()
        self.projection = projection
        if projection:
            self.shortcut_bn = nn.BatchNorm2d(in_channels)
            self.shortcut_conv = _conv(in_channels, channels, 1, stride=stride)

    def construct(self, x):
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        if self.projection:
            return out + self.shortcut_conv(self.relu(self.shortcut_bn(x)))
        return out + x


class WRNCifar(nn.Cell):
    """Pre-activation Wide ResNet for 32 x 32 inputs (``wrnc16``: WRN-16-8).

    conv3x3(16) -> 3 stages of ``blocks`` pre-activation blocks (widths ``widths``, stride 2 on
    the first block of stages 2 and 3, a projection shortcut on the first block of every stage)
    -> BN (no ReLU) -> global average pool -> FC classes.
    """

    def __init__(self, num_classes=10, in_channels=3, stem=WRN16_8_STEM, widths=WRN16_8_WIDTHS,
                 blocks=WRN16_BLOCKS):
        super().__init__()
        self.conv1 = _conv(in_channels, stem, 3)
        channels = stem
        for s, (width, depth) in enumerate(zip(widths, blocks)):
            stage = []
            for b in range(depth):
                stride = 2 if (s > 0 and b == 0) else 1
                stage.append(PreActBlock(channels, width, stride=stride, projection=(b == 0)))
                channels = width
            setattr(self, f"layer{s + 1}", nn.SequentialCell(stage))
        self.bn = nn.BatchNorm2d(channels)
        self.num_features = channels
        self.classifier = nn.Dense(channels, num_classes)

    def forward_features(self, x):
        x = self.conv1(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.bn(x)

    def construct(self, x):
        return self.classifier(ops.mean(self.forward_features(x), (2, 3)))


@register_model(family="cifar", num_classes=10)
def cfqkbnc(num_classes=10, in_channels=3, **kwargs):
    """Cifar-quick with BN, as ACNet's ``cfqkbnc``."""
    _check("cfqkbnc", num_classes, in_channels, kwargs)
    return CifarQuickBN(num_classes=num_classes, in_channels=in_channels)


@register_model(family="cifar", num_classes=10)
def vc(num_classes=10, in_channels=3, **kwargs):
    """VGG-16 with BN for CIFAR, as ACNet's ``vc``."""
    _check("vc", num_classes, in_channels, kwargs)
    return VGGCifar(num_classes=num_classes, in_channels=in_channels)


@register_model(family="cifar", num_classes=10)
def wrnc16(num_classes=10, in_channels=3, **kwargs):
    """Pre-activation WRN-16-8 without dropout, as ACNet's ``wrnc16plain``."""
    _check("wrnc16", num_classes, in_channels, kwargs)
    return WRNCifar(num_classes=num_classes, in_channels=in_channels)


CIFAR_ZOO = {"cfqkbnc": cfqkbnc, "vc": vc, "wrnc16": wrnc16}
