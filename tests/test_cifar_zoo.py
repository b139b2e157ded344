"""ACNet's CIFAR models (Cifar-quick + BN, VGG-16, pre-activation WRN-16-8) as plain networks."""
import os

import numpy as np
import pytest

from mindspore import Tensor, nn, ops

from acnet_ms.config.loader import load_config
from acnet_ms.models.cifar_zoo import CIFAR_ZOO, cfqkbnc, vc, wrnc16
from helpers import ROOT, assert_close, randomize_bn


def _input(n=2, c=3, seed=0):
    return Tensor(np.random.default_rng(seed).standard_normal((n, c, 32, 32)).astype(np.float32))


def _n_trainable(net):
    return sum(p.size for p in net.trainable_params())


def _convs(net):
    """name -> (in, out, kernel, stride, padding, has_bias) of every conv, in definition order."""
    out = {}
    for name, cell in net.cells_and_names():
        if isinstance(cell, nn.Conv2d):
            assert cell.pad_mode == "pad", name
            k, s = cell.kernel_size, cell.stride
            p = (cell.padding,) * 4 if isinstance(cell.padding, int) else tuple(cell.padding)
            assert k[0] == k[1] and s[0] == s[1] and len(set(p)) == 1, name
            out[name] = (cell.in_channels, cell.out_channels, k[0], s[0], p[0], cell.has_bias)
    return out


def _conv_params(cin, cout, k):
    return cin * cout * k * k


def _bn_params(c):
    return 2 * c                        # gamma, beta (moving statistics are not trainable)


def _dense_params(cin, cout):
    return cin * cout + cout


# ---------------------------------------------------------------- layouts, as documented

CFQK = [(3, 32), (32, 32), (32, 64)]                                  # 5 x 5, stride 1, pad 2
VGG = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
       (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]   # 3 x 3, pad 1


def _wrn_layout():
    """name -> (in, out, kernel, stride, padding, has_bias) of WRN-16-8's convs."""
    layout = {"conv1": (3, 16, 3, 1, 1, False)}
    cin = 16
    for s, width in enumerate((128, 256, 512)):
        for b in range(2):
            stride = 2 if s > 0 and b == 0 else 1
            pre = f"layer{s + 1}.{b}."
            layout[pre + "conv1"] = (cin, width, 3, stride, 1, False)
            layout[pre + "conv2"] = (width, width, 3, 1, 1, False)
            if b == 0:
                layout[pre + "shortcut_conv"] = (cin, width, 1, stride, 0, False)
            cin = width
    return layout


def test_forward_shapes():
    x = _input()
    for name, build in CIFAR_ZOO.items():
        for num_classes in (10, 7):
            net = build(num_classes=num_classes)
            net.set_train(False)
            assert net(x).shape == (2, num_classes), (name, num_classes)
    net = cfqkbnc(in_channels=1)
    net.set_train(False)
    assert net(_input(c=1)).shape == (2, 10)


def test_cfqkbnc_layout_and_params():
    net = cfqkbnc()
    expected = {f"features.{4 * i}": (cin, cout, 5, 1, 2, False) for i, (cin, cout) in enumerate(CFQK)}
    assert _convs(net) == expected
    # conv-BN-ReLU, then max / avg / avg 3 x 3 stride-2 pools without padding: 32 -> 15 -> 7 -> 3
    kinds = [type(c).__name__ for c in net.features.cell_list]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"] + ["Conv2d", "BatchNorm2d", "ReLU", "AvgPool2d"] * 2
    for i in (3, 7, 11):
        pool = net.features[i]
        assert (pool.kernel_size, pool.stride, pool.pad_mode) in (((3, 3), (2, 2), "VALID"), (3, 2, "VALID")), i
    side = 32
    for _ in range(3):
        side = (side - 3) // 2 + 1
    assert side == 3
    flat = side * side * 64
    assert net.classifier[0].in_channels == flat
    total = sum(_conv_params(cin, cout, 5) + _bn_params(cout) for cin, cout in CFQK)
    total += _dense_params(flat, 64) + _dense_params(64, 10)
    assert _n_trainable(net) == total


def test_vc_layout_and_params():
    net = vc()
    convs = _convs(net)
    assert list(convs.values()) == [(cin, cout, 3, 1, 1, False) for cin, cout in VGG]
    kinds = [type(c).__name__ for c in net.features.cell_list]
    pools = [i for i, k in enumerate(kinds) if k == "MaxPool2d"]
    # a pool after convs 2, 4, 7, 10 and 13: each conv contributes conv, BN, ReLU
    assert pools == [3 * 2, 3 * 4 + 1, 3 * 7 + 2, 3 * 10 + 3, 3 * 13 + 4]
    for i in pools:
        pool = net.features[i]
        assert (pool.kernel_size, pool.stride) in (((2, 2), (2, 2)), (2, 2)), i
    assert not any(isinstance(c, nn.Dropout) for _, c in net.cells_and_names())
    flat = 512 * (32 // 2 ** len(pools)) ** 2
    assert flat == 512 and net.classifier[0].in_channels == flat
    total = sum(_conv_params(cin, cout, 3) + _bn_params(cout) for cin, cout in VGG)
    total += _dense_params(flat, 512) + _dense_params(512, 10)
    assert _n_trainable(net) == total


def test_conv_bn_pairs_in_plain_models():
    """In cfqkbnc and vc every conv is followed directly by its own BN, then a ReLU."""
    for build in (cfqkbnc, vc):
        cells = build().features.cell_list
        for i, cell in enumerate(cells):
            if isinstance(cell, nn.Conv2d):
                assert isinstance(cells[i + 1], nn.BatchNorm2d)
                assert cells[i + 1].num_features == cell.out_channels
                assert isinstance(cells[i + 2], nn.ReLU)


def test_wrnc16_layout_and_params():
    net = wrnc16()
    layout = _wrn_layout()
    assert _convs(net) == layout
    assert len(layout) == 1 + 3 * 2 * 2 + 3          # stem, two 3 x 3 per block, one 1 x 1 per stage
    total = sum(_conv_params(cin, cout, k) for cin, cout, k, *_ in layout.values())
    # every block conv has a pre-activation BN over its input channels; a last BN over 512
    total += sum(_bn_params(cin) for name, (cin, *_) in layout.items() if name != "conv1")
    total += _bn_params(512) + _dense_params(512, 10)
    assert _n_trainable(net) == total
    n_bn = sum(isinstance(c, nn.BatchNorm2d) for _, c in net.cells_and_names())
    assert n_bn == len(layout) - 1 + 1
    assert not any(isinstance(c, nn.Dropout) for _, c in net.cells_and_names())


def test_wrnc16_is_pre_activation():
    """Each block computes conv(relu(bn(x))): the BN normalises the conv's input, not its output."""
    net = randomize_bn(wrnc16())
    net.set_train(False)
    relu = ops.relu
    for s in (1, 2, 3):
        for b in (0, 1):
            block = getattr(net, f"layer{s}")[b]
            assert block.bn1.num_features == block.conv1.in_channels
            assert block.bn2.num_features == block.conv2.in_channels
            cin = block.conv1.in_channels
            x = Tensor(np.random.default_rng(s * 2 + b).standard_normal((1, cin, 8, 8)).astype(np.float32))
            ref = block.conv2(relu(block.bn2(block.conv1(relu(block.bn1(x))))))
            if b == 0:
                assert block.shortcut_bn.num_features == block.shortcut_conv.in_channels
                ref = ref + block.shortcut_conv(relu(block.shortcut_bn(x)))
            else:
                assert not hasattr(block, "shortcut_conv")
                ref = ref + x
            assert_close(block(x).asnumpy(), ref.asnumpy(), 1e-5, f"layer{s}.{b}")
    # the stem conv has no BN of its own; the last BN is followed by the pool, no ReLU
    x = _input(n=1)
    feats = net.layer3(net.layer2(net.layer1(net.conv1(x))))
    ref = net.classifier(ops.mean(net.bn(feats), (2, 3)))
    assert_close(net(x).asnumpy(), ref.asnumpy(), 1e-5, "head")
    with_relu = net.classifier(ops.mean(relu(net.bn(feats)), (2, 3)))
    assert np.abs(with_relu.asnumpy() - ref.asnumpy()).max() > 1e-3


@pytest.mark.parametrize("name", sorted(CIFAR_ZOO))
@pytest.mark.parametrize("kwargs", [dict(num_classes=0), dict(num_classes=-3), dict(num_classes=2.5),
                                    dict(num_classes=True), dict(in_channels=0), dict(block_type="acb"),
                                    dict(depth=28)])
def test_bad_arguments(name, kwargs):
    with pytest.raises(ValueError):
        CIFAR_ZOO[name](**kwargs)


@pytest.mark.parametrize("name, lr, epochs, wd", [("cfqkbnc", 0.1, 150, 1e-4), ("vc", 0.1, 400, 1e-4),
                                                  ("wrnc16", 0.1, 400, 5e-4)])
def test_recipes(name, lr, epochs, wd):
    """Each recipe has the ResNet-56 recipe's keys and ACNet's values for the model."""
    cfg = load_config(os.path.join(ROOT, "configs", f"{name}_acb.yaml"))
    assert set(cfg) == set(load_config(os.path.join(ROOT, "configs", "src56_acb.yaml")))
    assert (cfg["model"], cfg["block_type"], cfg["dataset"], cfg["num_classes"]) == (name, "acb", "cifar10", 10)
    assert (cfg["opt"], cfg["momentum"], cfg["batch_size"]) == ("momentum", 0.9, 128)
    assert (cfg["scheduler"], cfg["min_lr"], cfg["warmup_epochs"]) == ("cosine_decay", 0.0, 0)
    assert (cfg["lr"], cfg["epoch_size"], cfg["weight_decay"]) == (lr, epochs, wd)
    assert abs(cfg["gamma_init"] - 1 / 3) < 1e-9
    assert name in CIFAR_ZOO
