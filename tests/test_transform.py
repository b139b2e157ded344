"""The generic transform: structure learnt from the network, ACB kinds, variants, finetuning starts."""
import numpy as np
import pytest
from helpers import assert_close, randomize_bn, slow_except

import mindspore as ms
from mindspore import Tensor, nn

from acnet_ms import block_layout, block_summary, create_model
from acnet_ms.reparam import state as state_map
from acnet_ms.engine.loading import load_pretrained
from acnet_ms.io.checkpoint import write_checkpoint
from acnet_ms.kinds.acb.cell import ACBlock
from acnet_ms.reparam.switch import switch_to_deploy
from acnet_ms.reparam.transform import summary_line, to_blocks, trace

TOL = 1e-4


class Tricky(nn.Cell):
    """conv_a -> bn_a (a pair); conv_b -> bn_b and + (a functional second use: no pair);
    conv_c -> bn_c1 and bn_c2 (two consumers); conv_d (bias) -> ReLU; conv_e (no bias) -> output;
    a 1 x 3 conv and a 7 x 7 conv."""

    def __init__(self):
        super().__init__()
        self.conv_a, self.bn_a = nn.Conv2d(3, 4, 3, pad_mode="pad", padding=1), nn.BatchNorm2d(4)
        self.conv_b, self.bn_b = nn.Conv2d(4, 4, 3, pad_mode="pad", padding=1), nn.BatchNorm2d(4)
        self.conv_c = nn.Conv2d(4, 4, 3, pad_mode="pad", padding=1)
        self.bn_c1, self.bn_c2 = nn.BatchNorm2d(4), nn.BatchNorm2d(4)
        self.conv_d = nn.Conv2d(4, 4, 3, pad_mode="same", has_bias=True)
        self.conv_e = nn.Conv2d(4, 4, 5, stride=2, pad_mode="pad", padding=1)
        self.conv_f = nn.Conv2d(4, 4, (1, 3), pad_mode="same")
        self.conv_g = nn.Conv2d(4, 4, 7, pad_mode="same")
        self.relu = nn.ReLU()

    def construct(self, x):
        a = self.relu(self.bn_a(self.conv_a(x)))
        b = self.conv_b(a)
        b = self.bn_b(b) + b
        c = self.conv_c(b)
        c = self.bn_c1(c) + self.bn_c2(c)
        d = self.relu(self.conv_d(c))
        return self.conv_g(self.conv_f(self.conv_e(d)))


def test_trace_finds_pairs_and_refuses_shared_outputs():
    net = Tricky()
    sites = trace(net, (1, 3, 12, 12))
    assert sites["conv_a"].bn == "bn_a"
    assert sites["conv_b"].bn is None and sites["conv_b"].leaks  # the add is invisible to hooks
    assert sites["conv_c"].bn is None and sites["conv_c"].feeds_bn
    assert sites["conv_d"].bn is None and sites["conv_d"].has_bias
    to_blocks(net, sites, "acb")
    s = block_summary(net)
    assert s["acbs"] == 3 and s["kinds"] == {"BN slot": 1, "conv bias": 1, "no BN (bias-free)": 1}
    assert s["plain"] == {"conv_b": "its output feeds a BatchNorm and something else",
                          "conv_c": "its output feeds a BatchNorm and something else",
                          "conv_f": "non-square kernel 1x3",
                          "conv_g": "kernel 7x7 (ACNet converts odd k with 1 < k < 7)"}
    assert isinstance(net.bn_a, nn.Identity) and isinstance(net.bn_b, nn.BatchNorm2d)
    assert "3 k x k convs became ACBs" in summary_line(net) and "non-square kernel 1x3" in summary_line(net)


@pytest.mark.parametrize("variant", [dict(), dict(acb_branches="h"), dict(acb_branches="v"),
                                     dict(acb_branch_bn=False), dict(acb_position="corner")],
                         ids=["hv", "h", "v", "nobn", "corner"])
@pytest.mark.parametrize("name", slow_except(["src20", "mnasnet_050"], "src20"))
def test_every_variant_folds_into_the_stock_model(name, variant, tmp_path):
    """Whole models: every ACB variant converts (convert.py's function) into the base model's checkpoint."""
    from acnet_ms.convert.pipeline import convert_checkpoint
    from acnet_ms.io.checkpoint import read_checkpoint

    ms.set_seed(3)
    acb = randomize_bn(create_model(name, num_classes=10, block_type="acb", **variant), seed=4)
    if variant.get("acb_branch_bn") is False:  # the branch kernels start random; the BNs are the model's
        assert not any(isinstance(c, ACBlock) and c.branch_bn for _, c in acb.cells_and_names())
    meta = dict(model=name, block_type="acb", num_classes=10, **variant)
    src, dst = str(tmp_path / "acb.ckpt"), str(tmp_path / "plain.ckpt")
    write_checkpoint(src, {p.name: p.asnumpy() for p in acb.get_parameters()}, meta)
    convert_checkpoint(src, dst, log=lambda *_: None)
    base = create_model(name, num_classes=10)
    arrays, _ = read_checkpoint(dst)
    params = {k: ms.Parameter(Tensor(v), name=k) for k, v in arrays.items()}
    assert ms.load_param_into_net(base, params, strict_load=True) == ([], [])
    size = 32 if name == "src20" else 64
    x = Tensor(np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32))
    acb.set_train(False)
    base.set_train(False)
    expected = acb(x).asnumpy()
    assert_close(base(x).asnumpy(), expected, TOL, f"{name} {variant}")
    switch_to_deploy(acb)
    assert_close(acb(x).asnumpy(), expected, TOL, f"{name} {variant} in memory")


@pytest.mark.parametrize("name", ["mobilenet_v3_small_075", "densenet121"])
@pytest.mark.slow
def test_finetuning_from_a_stock_mindcv_checkpoint_starts_from_its_function(name, tmp_path):
    """Square branch = pretrained kernel (+ BN), asymmetric branches switched off: same logits."""
    import mindcv

    stock = randomize_bn(mindcv.create_model(name, num_classes=10), seed=5)
    path = str(tmp_path / "stock.ckpt")
    ms.save_checkpoint(stock, path)
    acb = create_model(name, num_classes=10, block_type="acb")
    loaded = set(load_pretrained(acb, path, log=lambda *_: None))
    # every stock parameter lands (in the square branch or the slot it had); the asymmetric BNs are switched off
    assert {p.name for p in acb.get_parameters() if ".square_" in p.name} <= loaded
    for p in acb.get_parameters():
        if p.name.endswith(("hor_bn.gamma", "ver_bn.beta")):
            assert p.name in loaded and not p.asnumpy().any()
    x = Tensor(np.random.default_rng(1).normal(size=(2, 3, 64, 64)).astype(np.float32))
    stock.set_train(False)
    acb.set_train(False)
    assert_close(acb(x).asnumpy(), stock(x).asnumpy(), TOL, name)


def test_a_model_without_eligible_convs_is_a_clear_error():
    with pytest.raises(ValueError, match=r"mlp_mixer_s_p32 has no k x k conv that can become an ACB "
                                         r"\(0 k x k convs became ACBs; stayed plain: 1 \(non-square|kernel 32x32"):
        create_model("mlp_mixer_s_p32", block_type="acb")


class StandardisedConv(nn.Conv2d):
    """A conv computing with standardised weights (as MindCV's BiT StdConv2d): not a plain nn.Conv2d."""

    def construct(self, x):
        w = self.weight
        w = (w - w.mean((1, 2, 3), keep_dims=True)) / (w.std((1, 2, 3), keepdims=True) + 1e-5)
        return self.conv2d(x, w)


class RenamedConv(nn.Conv2d):
    """A subclass with nn.Conv2d's own construct."""


class Mixed(nn.Cell):
    def __init__(self):
        super().__init__()
        self.plain, self.bn = nn.Conv2d(3, 4, 3, pad_mode="pad", padding=1), nn.BatchNorm2d(4)
        self.std = StandardisedConv(4, 4, 3, pad_mode="pad", padding=1)
        self.std_1x1 = StandardisedConv(4, 4, 1)
        self.renamed = RenamedConv(4, 4, 3, pad_mode="pad", padding=1)

    def construct(self, x):
        return self.renamed(self.std_1x1(self.std(self.bn(self.plain(x)))))


def test_conv_subclasses_stay_plain_and_the_summary_names_their_class():
    net = Mixed()
    to_blocks(net, trace(net, (1, 3, 8, 8)), "acb")
    s = block_summary(net)
    assert s["acbs"] == 1 and isinstance(net.plain, ACBlock)
    assert s["plain"] == {  # the 1 x 1 one is no k x k conv
        "std": "StandardisedConv, an nn.Conv2d subclass whose construct differs: ACBs replace only plain nn.Conv2d",
        "renamed": "RenamedConv, an nn.Conv2d subclass: ACBs replace only plain nn.Conv2d"}
    assert isinstance(net.std, StandardisedConv) and isinstance(net.renamed, RenamedConv)


def test_a_model_of_conv_subclasses_only_says_which_class_kept_its_convs():
    """MindCV's BiT computes with weight-standardised StdConv2d cells: none of its convs can take an ACB."""
    with pytest.raises(ValueError) as err:
        create_model("BiT_resnet50", num_classes=10, block_type="acb")
    assert str(err.value) == (
        "BiT_resnet50 has no k x k conv that can become an ACB (0 k x k convs became ACBs; stayed plain: 17 "
        "(StdConv2d, an nn.Conv2d subclass whose construct differs: ACBs replace only plain nn.Conv2d)); "
        "use block_type 'base'")  # 16 3 x 3 convs and the 7 x 7 stem


def test_layout_records_where_each_fold_goes():
    net = create_model("src20", block_type="acb", acb_position="corner")
    layout = block_layout(net)
    assert len(layout) == 19
    assert layout["conv1"] == dict(kind="acb", branches="hv", branch_bn=True, position="corner", eps=1e-5,
                                   has_bias=False, slot="bn", bn="bn1")
    plain = state_map.plain_to_blocks({"conv1.weight": np.ones((16, 3, 3, 3), np.float32)}, layout)
    assert "conv1.square_conv.weight" in plain and np.all(plain["conv1.hor_bn.gamma"] == 0)


@pytest.mark.slow
def test_same_padded_acb_model_keeps_training_past_its_first_step():
    """MobileNetV3's stride-2 'same' depthwise convs as ACBs: three graph-mode train steps (a padding op whose
    backward stalled the whole graph from the second step on once did not return)."""
    import subprocess
    import sys

    from helpers import ROOT

    code = (
        "import numpy as np, mindspore as ms\n"
        "from mindspore import nn, Tensor\n"
        "ms.set_context(mode=ms.GRAPH_MODE); ms.set_device('CPU')\n"
        "from acnet_ms import create_model\n"
        "net = create_model('mobilenet_v3_small_075', num_classes=10, block_type='acb')\n"
        "step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.CrossEntropyLoss()),"
        " nn.Momentum(net.trainable_params(), 0.01, 0.9))\n"
        "step.set_train()\n"
        "x, y = Tensor(np.random.rand(4, 3, 32, 32).astype(np.float32)), Tensor(np.zeros(4, np.int32))\n"
        "print([round(float(step(x, y).asnumpy()), 3) for _ in range(3)])\n"
        "import os; os._exit(0)\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=180,
                         env=dict(__import__("os").environ, GLOG_v="4"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().startswith("[") and res.stdout.count(",") == 2


@pytest.mark.slow
def test_a_model_that_asserts_its_input_size_is_traced_at_a_size_it_takes():
    # cmt_small asserts (AssertionError) that its input is 224 px: tracing goes on to the next size
    from acnet_ms import block_summary, create_model

    assert block_summary(create_model("cmt_small", num_classes=10, block_type="acb"))["acbs"] == 53
