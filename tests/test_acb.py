"""ACBlock: eval-mode equivalence with its folded conv, and training-mode gradients."""
import itertools

import numpy as np
import pytest
from conftest import assert_close, randomize_bn

import mindspore as ms
from mindspore import Tensor, nn, ops

from acnet_ms.kinds.acb.cell import ACBlock
from acnet_ms.reparam.switch import switch_to_deploy

TOL = 2e-5  # float32; errors seen are ~1e-6 relative

CASES = list(itertools.product((3, 5), (1, 2), ("below", "same", "above"), (1, 2), ("1", "2", "dw")))


def _ids(case):
    k, s, p, d, g = case
    return f"k{k}-s{s}-p{p}-d{d}-g{g}"


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_eval_equals_folded_conv(case):
    k, stride, pad, dilation, groups = case
    padding = {"below": 0, "same": k // 2, "above": k // 2 + 1}[pad]
    cin, cout = (4, 4) if groups == "dw" else (4, 6)
    groups = cin if groups == "dw" else int(groups)
    ms.set_seed(sum(case[:2]) + padding + dilation + groups)
    block = randomize_bn(ACBlock(cin, cout, k, stride=stride, padding=padding, dilation=dilation,
                                 groups=groups), seed=k * 100 + stride * 10 + padding)
    block.set_train(False)
    x = Tensor(np.random.default_rng(1).normal(size=(2, cin, 15, 16)).astype(np.float32))
    y_acb = block(x).asnumpy()
    # the plain conv of the same configuration fixes the expected output shape
    plain = nn.Conv2d(cin, cout, k, stride=stride, pad_mode="pad", padding=padding, dilation=dilation, group=groups)
    assert y_acb.shape == plain(x).shape
    block.switch_to_deploy()
    assert [n for n, _ in block.cells_and_names()] == ["", "fused_conv"]
    y_fused = block(x).asnumpy()
    assert_close(y_fused, y_acb, TOL, _ids(case))
    assert np.abs(y_acb).max() > 0.1


def test_asymmetric_windows_sit_on_the_centre_row_and_column():
    """Single-pixel input: each branch's response marks where its window reaches."""
    block = ACBlock(1, 1, 3, stride=1, padding=0, dilation=2)
    block.set_train(False)
    for branch in ("square", "hor", "ver"):
        conv = getattr(block, branch + "_conv")
        conv.weight.set_data(Tensor(np.ones(conv.weight.shape, np.float32) * (branch != "square")))
    x = np.zeros((1, 1, 9, 9), np.float32)
    x[0, 0, 4, 4] = 1.0
    y = block(Tensor(x)).asnumpy()[0, 0] / (1 / np.sqrt(1 + 1e-5))
    # output (i, j) sees rows i..i+4 and cols j..j+4 (step 2): centre row is i + 2, centre col j + 2
    expected = np.zeros((5, 5), np.float32)
    expected[2, 0:5:2] += 1  # horizontal taps: input row 4 == i + 2 -> i = 2; cols j, j+2, j+4 hit 4
    expected[0:5:2, 2] += 1
    np.testing.assert_allclose(y, expected, atol=1e-5)


def test_gamma_init_sets_all_three_bns():
    block = ACBlock(2, 2, 3, gamma_init=1 / 3)
    for branch in ("square", "hor", "ver"):
        np.testing.assert_allclose(getattr(block, branch + "_bn").gamma.asnumpy(), 1 / 3, rtol=1e-6)


class Grads(nn.Cell):
    """Gradients of mean(net(x) ** 2) with respect to ``weights``."""

    def __init__(self, net, weights):
        super().__init__()
        self.net = net
        self.grad = ops.GradOperation(get_by_list=True)
        self.weights = ms.ParameterTuple(weights)

    def loss(self, x):
        return (self.net(x) ** 2).mean()

    def construct(self, x):
        return self.grad(self.loss, self.weights)(x)


def test_training_mode_gradients_reach_all_six_branches():
    block = ACBlock(3, 4, 3, stride=2, padding=0)
    weights = block.trainable_params()

    block.set_train(True)
    before = {b: getattr(block, b + "_bn").moving_mean.asnumpy().copy() for b in ("square", "hor", "ver")}
    x = Tensor(np.random.default_rng(0).normal(1.0, 1.0, size=(4, 3, 9, 9)).astype(np.float32))
    grads = Grads(block, weights)(x)
    names = [w.name for w in weights]
    assert len(names) == 9  # 3 conv kernels + 3 x (gamma, beta)
    for name, g in zip(names, grads):
        assert np.abs(g.asnumpy()).max() > 0, f"no gradient reaches {name}"
    for branch in ("square", "hor", "ver"):
        assert any(branch + "_conv" in n for n in names) and any(branch + "_bn.gamma" in n for n in names)
        # training mode: each BN normalises with its own batch statistics and updates its moving mean
        after = getattr(block, branch + "_bn").moving_mean.asnumpy()
        assert not np.allclose(after, before[branch]), f"{branch}_bn did not update its statistics"


def test_switch_to_deploy_on_a_compiled_network_recompiles_and_renames():
    net = nn.SequentialCell([ACBlock(3, 4, 3), nn.Identity(), nn.ReLU()])
    randomize_bn(net, seed=3)
    net.set_train(False)
    x = Tensor(np.random.default_rng(2).normal(size=(1, 3, 8, 8)).astype(np.float32))
    before = net(x).asnumpy()
    switch_to_deploy(net)
    assert sorted(p.name for p in net.get_parameters()) == ["0.fused_conv.bias", "0.fused_conv.weight"]
    assert_close(net(x).asnumpy(), before, TOL)
    switch_to_deploy(net)  # idempotent
    assert_close(net(x).asnumpy(), before, TOL)


@pytest.mark.parametrize("bad", [dict(kernel_size=4), dict(kernel_size=1), dict(kernel_size=3.0),
                                 dict(kernel_size=3, groups=3), dict(kernel_size=3, padding=-1)])
def test_bad_arguments_fail_at_construction(bad):
    with pytest.raises(ValueError, match="kernel_size|groups|padding"):
        ACBlock(4, 4, **bad)


VARIANTS = {"h": dict(branches="h"), "v": dict(branches="v"), "nobn": dict(branch_bn=False),
            "corner": dict(position="corner"), "corner-nobn-bias": dict(position="corner", branch_bn=False,
                                                                        has_bias=True)}
VARIANT_CASES = list(itertools.product(sorted(VARIANTS), (3, 5), (1, 2), ("half", "zero"), ("1", "dw")))


@pytest.mark.parametrize("case", VARIANT_CASES, ids=lambda c: "-".join(map(str, c)))
def test_variants_eval_equal_their_folded_conv(case):
    variant, k, stride, pad, groups = case
    cin, cout = (4, 4) if groups == "dw" else (4, 6)
    groups = cin if groups == "dw" else 1
    ms.set_seed(k + stride)
    block = randomize_bn(ACBlock(cin, cout, k, stride=stride, padding=k // 2 if pad == "half" else 0,
                                 groups=groups, **VARIANTS[variant]), seed=k * 10 + stride)
    if variant == "corner-nobn-bias":
        block.square_conv.bias.set_data(Tensor(np.linspace(-1, 1, cout).astype(np.float32)))
    block.set_train(False)
    x = Tensor(np.random.default_rng(3).normal(size=(2, cin, 13, 12)).astype(np.float32))
    y_acb = block(x).asnumpy()
    block.switch_to_deploy()
    assert_close(block(x).asnumpy(), y_acb, TOL, str(case))


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("branch_bn", [True, False])
def test_same_padding_follows_mindspore(stride, branch_bn):
    """pad_mode 'same' (MindCV's default for many convs): the odd padding row goes to the bottom."""
    block = randomize_bn(ACBlock(3, 4, 3, stride=stride, pad_mode="same", branch_bn=branch_bn), seed=stride)
    block.set_train(False)
    x = Tensor(np.random.default_rng(4).normal(size=(1, 3, 10, 11)).astype(np.float32))
    y_acb = block(x).asnumpy()
    plain = nn.Conv2d(3, 4, 3, stride=stride, pad_mode="same")
    assert y_acb.shape == plain(x).shape
    block.switch_to_deploy()
    assert block.fused_conv.pad_mode == "same"
    assert_close(block(x).asnumpy(), y_acb, TOL, f"same, stride {stride}")


def test_one_conv_form_has_the_three_conv_forms_gradients():
    """branch_bn=False trains as ONE conv over the summed kernel: same outputs and gradients as the sum of
    three convs (the asymmetric ones cropped/padded onto the square window) for every parameter."""
    block = ACBlock(3, 4, 3, stride=2, padding=0, branch_bn=False)
    rng = np.random.default_rng(5)
    for name in ("square", "hor", "ver"):
        w = getattr(block, name + "_conv").weight
        w.set_data(Tensor(rng.normal(size=w.shape).astype(np.float32)))

    class ThreeConvs(nn.Cell):
        """The reference: three explicit convs on crops of the input, as the three-branch form computes."""

        def __init__(self, b):
            super().__init__()
            self.b = b

        def construct(self, x):
            sq = ops.conv2d(x, self.b.square_conv.weight, stride=2)
            hor = ops.conv2d(x[:, :, 1:x.shape[2] - 1, :], self.b.hor_conv.weight, stride=2)
            ver = ops.conv2d(x[:, :, :, 1:x.shape[3] - 1], self.b.ver_conv.weight, stride=2)
            return sq + hor + ver

    x = Tensor(rng.normal(size=(2, 3, 9, 9)).astype(np.float32))
    weights = ms.ParameterTuple(block.trainable_params())
    assert len(weights) == 3

    def grads_of(net):
        return Grads(net, weights)(x)

    assert_close(block(x).asnumpy(), ThreeConvs(block)(x).asnumpy(), TOL, "outputs")
    for w, g1, g2 in zip(weights, grads_of(block), grads_of(ThreeConvs(block))):
        assert np.abs(g2.asnumpy()).max() > 0
        assert_close(g1.asnumpy(), g2.asnumpy(), TOL, w.name)


@pytest.mark.parametrize("bad, match", [(dict(branches="x"), "branches"), (dict(position="edge"), "position"),
                                        (dict(has_bias=True), "has_bias"), (dict(pad_mode="full"), "pad_mode")])
def test_bad_variant_arguments_fail_at_construction(bad, match):
    with pytest.raises(ValueError, match=match):
        ACBlock(4, 4, 3, **bad)
