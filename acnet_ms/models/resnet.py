"""ResNets for ImageNet (``sres*``, the registry's ``resnet18`` ... ``resnet152``) and CIFAR (``src*``).

The ImageNet models are MindCV's ``resnet18`` ... ``resnet152`` cell for cell
(``conv1.weight``, ``layer1.0.bn1.gamma``, ``layer2.0.down_sample.0.weight``,
``classifier.weight``, ...: the same names, shapes and function, tested).  They
are written here, and built for MindCV's names too, because MindCV's blocks add
the shortcut in place (``out += identity``), which MindSpore's ONNX exporter
cannot convert; these export.  Models are plain: ``acnet_ms.reparam.transform`` makes
the ACB form (every 3 x 3 conv an ACB under the conv's name) and the fully
folded form.
"""
import mindspore.common.initializer as init
from mindspore import nn, ops

from ..layers.conv_bn import conv_bn
from .registry import register_model


#: the ImageNet stem's max-pool padding: MindCV's ("same") or PyTorch's ("symmetric")
MAXPOOL_PADS = ("same", "symmetric")


class BasicBlock(nn.Cell):
    expansion = 1

    def __init__(self, in_channels, channels, stride=1, down_sample=None, groups=1, base_width=64):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only groups=1 and base_width=64")
        self.conv1, self.bn1 = conv_bn(in_channels, channels, 3, stride=stride)
        self.relu = nn.ReLU()
        self.conv2, self.bn2 = conv_bn(channels, channels, 3)
        self.down_sample = down_sample

    def construct(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.down_sample is not None:
            identity = self.down_sample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Cell):
    """Stride on the 3 x 3 conv (as torchvision and MindCV)."""
    expansion = 4

    def __init__(self, in_channels, channels, stride=1, down_sample=None, groups=1, base_width=64):
        super().__init__()
        width = int(channels * (base_width / 64.0)) * groups
        self.conv1, self.bn1 = conv_bn(in_channels, width, 1)
        self.conv2, self.bn2 = conv_bn(width, width, 3, stride=stride, groups=groups)
        self.conv3, self.bn3 = conv_bn(width, channels * self.expansion, 1)
        self.relu = nn.ReLU()
        self.down_sample = down_sample

    def construct(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.down_sample is not None:
            identity = self.down_sample(x)
        return self.relu(out + identity)


class ResNet(nn.Cell):
    """ResNet with MindCV's cell names.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage.
        widths: channels of each stage (before the block's expansion).
        stem: ``"imagenet"`` (7 x 7 stride-2 conv + 3 x 3 max-pool, 64 channels) or
            ``"cifar"`` (3 x 3 conv, ``widths[0]`` channels, no pooling).
        groups, base_width: ResNeXt cardinality and width per group, passed to every block.
        block_kwargs: further keyword arguments for every block (e.g. the SK blocks' ``sk_kwargs``).
        stem_width: channels of the ImageNet stem (64).
        maxpool_pad: the ImageNet stem's 3 x 3 stride-2 max-pool: ``"same"`` (MindCV's: one row and
            column of padding at the bottom and right of an even input) or ``"symmetric"`` (PyTorch's
            ``padding=1`` on every side: torchvision's and the DBB/OREPA/RepVGG authors' ResNets).  Same
            output size, windows one pixel apart: the same weights compute a shifted function
            (docs/pretrained.md measures it).
    """

    def __init__(self, block, layers, widths=(64, 128, 256, 512), num_classes=1000, in_channels=3,
                 stem="imagenet", groups=1, base_width=64, block_kwargs=None, stem_width=64, maxpool_pad="same"):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if maxpool_pad not in MAXPOOL_PADS:
            raise ValueError(f"maxpool_pad must be one of {', '.join(MAXPOOL_PADS)}, got {maxpool_pad!r}")
        opts = dict(groups=groups, base_width=base_width, **(block_kwargs or {}))
        if stem == "imagenet":
            self.input_channels = stem_width
            self.conv1, self.bn1 = conv_bn(in_channels, stem_width, 7, stride=2, padding=3)
            self.max_pool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="same") if maxpool_pad == "same" else \
                nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1)
        else:
            self.input_channels = widths[0]
            self.conv1, self.bn1 = conv_bn(in_channels, widths[0], 3)
            self.max_pool = None
        self.relu = nn.ReLU()
        stages = []
        for i, (width, depth) in enumerate(zip(widths, layers)):
            stages.append(self._make_layer(block, width, depth, 1 if i == 0 else 2, opts))
        # MindCV names the stages layer1..layer4
        for i, stage in enumerate(stages):
            setattr(self, f"layer{i + 1}", stage)
        self.stages = len(stages)
        self.num_features = widths[-1] * block.expansion
        self.classifier = nn.Dense(self.num_features, num_classes)
        self._initialize_weights()

    def _make_layer(self, block, channels, depth, stride, opts):
        down_sample = None
        out_channels = channels * block.expansion
        if stride != 1 or self.input_channels != out_channels:
            conv, bn = conv_bn(self.input_channels, out_channels, 1, stride=stride)
            down_sample = nn.SequentialCell([conv, bn])
        blocks = [block(self.input_channels, channels, stride=stride, down_sample=down_sample, **opts)]
        self.input_channels = out_channels
        for _ in range(1, depth):
            blocks.append(block(self.input_channels, channels, **opts))
        return nn.SequentialCell(blocks)

    def _initialize_weights(self):
        """MindCV's initialisation (He-normal fan-out convs, He-uniform classifier); BNs keep their own."""
        for _, cell in self.cells_and_names():
            if isinstance(cell, nn.Conv2d):
                cell.weight.set_data(init.initializer(init.HeNormal(mode="fan_out", nonlinearity="relu"),
                                                      cell.weight.shape, cell.weight.dtype))
            elif isinstance(cell, nn.Dense):
                cell.weight.set_data(init.initializer(init.HeUniform(mode="fan_in", nonlinearity="sigmoid"),
                                                      cell.weight.shape, cell.weight.dtype))
                cell.bias.set_data(init.initializer("zeros", cell.bias.shape, cell.bias.dtype))

    def forward_features(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        if self.max_pool is not None:
            x = self.max_pool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        if self.stages == 4:
            x = self.layer4(x)
        return x

    def forward_head(self, x):
        return self.classifier(ops.mean(x, (2, 3)))

    def construct(self, x):
        return self.forward_head(self.forward_features(x))


def _imagenet(block, layers, **kwargs):
    return ResNet(block, layers, **kwargs)


def _cifar(depth, **kwargs):
    if (depth - 2) % 6:
        raise ValueError(f"a CIFAR ResNet has depth 6n + 2, got {depth}")
    n = (depth - 2) // 6
    return ResNet(BasicBlock, (n, n, n), widths=(16, 32, 64), stem="cifar", **kwargs)


@register_model(family="imagenet", mindcv="resnet18")
def sres18(**kwargs):
    """ResNet-18 (ImageNet); = MindCV ``resnet18``."""
    return _imagenet(BasicBlock, (2, 2, 2, 2), **kwargs)


@register_model(family="imagenet", mindcv="resnet34")
def sres34(**kwargs):
    """ResNet-34 (ImageNet); = MindCV ``resnet34``."""
    return _imagenet(BasicBlock, (3, 4, 6, 3), **kwargs)


@register_model(family="imagenet", mindcv="resnet50")
def sres50(**kwargs):
    """ResNet-50 (ImageNet); = MindCV ``resnet50``."""
    return _imagenet(Bottleneck, (3, 4, 6, 3), **kwargs)


@register_model(family="imagenet", mindcv="resnet101")
def sres101(**kwargs):
    """ResNet-101 (ImageNet); = MindCV ``resnet101``."""
    return _imagenet(Bottleneck, (3, 4, 23, 3), **kwargs)


@register_model(family="imagenet", mindcv="resnet152")
def sres152(**kwargs):
    """ResNet-152 (ImageNet); = MindCV ``resnet152``."""
    return _imagenet(Bottleneck, (3, 8, 36, 3), **kwargs)


@register_model(family="cifar", num_classes=10)
def src20(**kwargs):
    """ResNet-20 for 32 x 32 inputs (3 stages of 3 basic blocks, 16/32/64 channels)."""
    return _cifar(20, **kwargs)


@register_model(family="cifar", num_classes=10)
def src56(**kwargs):
    """ResNet-56 for 32 x 32 inputs (3 stages of 9 basic blocks, 16/32/64 channels)."""
    return _cifar(56, **kwargs)


@register_model(family="cifar", num_classes=10)
def src110(**kwargs):
    """ResNet-110 for 32 x 32 inputs (3 stages of 18 basic blocks, 16/32/64 channels)."""
    return _cifar(110, **kwargs)
