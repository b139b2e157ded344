"""The rep kind (RepVGG / MobileOne): its fold against numpy, its Cell against its folded conv, its models
against the stock MindCV models."""
import itertools

import numpy as np
import pytest
from conftest import assert_close, randomize_bn
from test_fold import bn as np_bn, conv2d, random_branch

import mindspore as ms
from mindspore import Tensor, nn, ops

from acnet_ms import fold
from acnet_ms.kinds import check_block, get_kind
from acnet_ms.kinds.rep import mac_ratio
from acnet_ms.layers import RepBlock, switch_to_deploy
from acnet_ms.layers import geometry

TOL = 2e-5  # float32, one block; errors seen are ~1e-6 relative
MODEL_TOL = 1e-4  # float32 through a whole network, relative to the largest logit


@pytest.fixture(autouse=True)
def pynative():
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=mode)


def reference_conv(x, w, bias=None, groups=1, stride=1, pads=(0, 0, 0, 0), dilation=1):
    """float64 numpy conv: explicit (top, bottom, left, right) zero padding, then ``conv2d`` per group."""
    t, b, l, r = pads
    x = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (t, b), (l, r)))
    ci, co = x.shape[1] // groups, w.shape[0] // groups
    out = np.concatenate([conv2d(x[:, g * ci:(g + 1) * ci], np.asarray(w[g * co:(g + 1) * co], np.float64), stride,
                                 (0, 0), dilation) for g in range(groups)], axis=1)
    return out if bias is None else out + np.asarray(bias, np.float64).reshape(1, -1, 1, 1)


def damp(net):
    """Divide each rep block's branch BN gammas and betas by its number of BNs: randomized statistics stay,
    and the sum of the branches has one branch's gain, as a trained network's would (random BNs on six
    parallel branches multiply the gain of every layer, and float32 rounding with it)."""
    for _, cell in net.cells_and_names():
        if isinstance(cell, RepBlock) and cell.branch_bn and not cell.deploy:
            bns = [b for _, b in cell.cells_and_names() if isinstance(b, nn.BatchNorm2d)]
            for b in bns:
                b.gamma.set_data(Tensor(b.gamma.asnumpy() / len(bns)))
                b.beta.set_data(Tensor(b.beta.asnumpy() / len(bns)))
    return net


def state_of(cell, prefix="blk"):
    return {f"{prefix}.{name}": p.asnumpy() for name, p in cell.parameters_and_names()}


# ---------------------------------------------------------------- the fold (numpy)

@pytest.mark.parametrize("groups,with_bn", [(1, True), (2, True), (4, True), (1, False), (4, False)])
def test_fold_rep_equals_its_branches(groups, with_bn):
    """sum_i BN_i(K_i * x) + BN_s(S * x) + BN_id(x) == one conv, k x k (padding k // 2, stride 1)."""
    rng = np.random.default_rng(groups)
    c, k = 4, 3
    x = rng.normal(size=(2, c, 7, 8))
    dense = [random_branch(rng, (c, c // groups, k, k)) for _ in range(3)]
    scale = random_branch(rng, (c, c // groups, 1, 1))
    ident = random_branch(rng, (c, 1, 1, 1))[1:]
    pick = (lambda b: b) if with_bn else (lambda b: b[:1])
    use = (lambda y, b: np_bn(y, *b[1:])) if with_bn else (lambda y, b: y)
    ref = sum(use(reference_conv(x, b[0], groups=groups, pads=(1,) * 4), b) for b in dense)
    ref = ref + use(reference_conv(x, scale[0], groups=groups), scale)
    ref = ref + (np_bn(x, *ident) if with_bn else x)
    kernel, bias = fold.fold_rep([pick(b) for b in dense], pick(scale), ident if with_bn else ())
    assert (bias is None) == (not with_bn)
    got = reference_conv(x, kernel, bias, groups, pads=(1,) * 4)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)
    # a 1 x 1 site: parallel 1 x 1 branches and the identity, no scale branch
    dense = [random_branch(rng, (c, c // groups, 1, 1)) for _ in range(2)]
    kernel, bias = fold.fold_rep([pick(b) for b in dense], None, ident if with_bn else (), bias=np.ones(c))
    ref = sum(use(reference_conv(x, b[0], groups=groups), b) for b in dense) + (np_bn(x, *ident) if with_bn else x)
    np.testing.assert_allclose(reference_conv(x, kernel, bias, groups), ref + 1, rtol=1e-10, atol=1e-10)


def test_mac_ratio_counts_the_branch_convs():
    """The 'FLOP floor': conv multiply-adds of the training form per multiply-add of the plain conv, checked
    by counting those of every conv cell of a 3 x 3 64 -> 64 block."""
    assert mac_ratio(3) == pytest.approx(10 / 9)
    assert mac_ratio(3, num_kxk=4) == pytest.approx(37 / 9)
    assert mac_ratio(1, num_kxk=4) == 4 and mac_ratio(3, branch_bn=False) == 1.0
    for num in (1, 4):
        block = RepBlock(64, 64, 3, num_kxk=num)
        x = Tensor(np.zeros((1, 64, 8, 8), np.float32))
        macs = []
        hooks = [c.register_forward_hook(lambda c, a, o: macs.append(
            o.shape[1] * o.shape[2] * o.shape[3] * c.in_channels // c.group * c.kernel_size[0] * c.kernel_size[1]))
            for _, c in block.cells_and_names() if isinstance(c, nn.Conv2d)]
        block.set_train(False)
        block(x)
        for h in hooks:
            h.remove()
        assert sum(macs) / (64 * 64 * 8 * 8 * 9) == pytest.approx(mac_ratio(3, num_kxk=num))


# ---------------------------------------------------------------- the Cell

GEOMETRIES = ("pad-half", "pad-0", "same", "valid")
CASES = list(itertools.product((3, 5), (1, 2), GEOMETRIES, ("1", "2", "dw")))


def _ids(case):
    k, s, geo, g = case
    return f"k{k}-s{s}-{geo}-g{g}"


def _block(k, stride, geo, groups, c=4, **kwargs):
    pad_mode = geo if geo in ("same", "valid") else "pad"
    padding = {"pad-half": k // 2, "pad-0": 0}.get(geo, 0)
    groups = c if groups == "dw" else int(groups)
    return RepBlock(c, c, k, stride=stride, padding=padding, groups=groups, pad_mode=pad_mode, **kwargs)


def _explicit_pads(block, x):
    if block.same:
        return geometry.same_pads(x.shape[2], x.shape[3], block.kernel_size, block.stride, block.dilation)
    return block.padding


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


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_eval_equals_its_folded_conv_and_the_numpy_fold(case):
    """Every stride, padding (half, zero, 'same', 'valid') and grouping, two k x k branches: in training every
    branch's parameters get a gradient; in eval the block equals its switched conv and the numpy fold of its
    entries run as a float64 conv; the identity exists exactly where the conv keeps the input's grid."""
    k, stride, geo, _ = case
    ms.set_seed(k + stride)
    block = _block(*case, num_kxk=2)
    assert block.has_identity == (stride == 1 and geo in ("pad-half", "same"))
    assert block.has_scale
    x = Tensor(np.random.default_rng(k * stride).normal(1.0, 1.0, size=(2, 4, 11, 12)).astype(np.float32))
    block.set_train(True)
    weights = block.trainable_params()
    assert len(weights) == 3 * 3 + 2 * block.has_identity  # 3 convs, 3 + identity BNs (gamma, beta)
    for w, g in zip(weights, Grads(block, weights)(x)):
        g = g.asnumpy()
        assert np.isfinite(g).all() and np.abs(g).max() > 0, f"no gradient reaches {w.name}"

    randomize_bn(block, seed=k * 10 + stride)
    block.set_train(False)
    y = block(x).asnumpy()
    plain = nn.Conv2d(4, 4, k, stride=stride, pad_mode=block.pad_mode if not block.same else "same",
                      padding=block.padding if not block.same else 0, group=block.groups)
    assert y.shape == plain(x).shape and np.abs(y).max() > 0.1
    info = block.reparam_info()
    kernel, bias, names = get_kind("rep").fold(state_of(block), "blk", info)
    assert sorted(names) == sorted(state_of(block))
    expected = reference_conv(x.asnumpy(), kernel, bias, block.groups, stride, _explicit_pads(block, x))
    assert_close(y, expected, TOL, _ids(case) + " numpy fold")
    block.switch_to_deploy()
    assert [n for n, _ in block.cells_and_names()] == ["", "fused_conv"]
    assert_close(block(x).asnumpy(), y, TOL, _ids(case) + " switched")


@pytest.mark.parametrize("stride,padding", [(1, 2), (1, 0), (1, 1), (2, 2), (2, 3)])
def test_dilated_windows_keep_the_centre_tap(stride, padding):
    """Dilation 2: the 1 x 1 branch reads the centre tap (padding 2 keeps the grid: identity too)."""
    ms.set_seed(stride + padding)
    block = randomize_bn(RepBlock(4, 4, 3, stride=stride, padding=padding, dilation=2), seed=padding)
    assert block.has_identity == (stride == 1 and padding == 2)
    block.set_train(False)
    x = Tensor(np.random.default_rng(padding).normal(size=(1, 4, 12, 11)).astype(np.float32))
    y = block(x).asnumpy()
    kernel, bias, _ = get_kind("rep").fold(state_of(block), "blk", block.reparam_info())
    assert_close(y, reference_conv(x.asnumpy(), kernel, bias, 1, stride, (padding,) * 4, 2), TOL, "dilated")
    block.switch_to_deploy()
    assert_close(block(x).asnumpy(), y, TOL, "dilated, switched")


def test_the_scale_branch_and_the_identity_sit_on_the_centre_tap():
    """Single-pixel input, padding 0, dilation 2: only the 1 x 1 branch (weight 1) is on; it answers at the one
    output whose window centre is the pixel."""
    block = RepBlock(1, 1, 3, padding=0, dilation=2, branch_bn=False)
    block.dense[0].conv.weight.set_data(Tensor(np.zeros((1, 1, 3, 3), np.float32)))
    block.scale.conv.weight.set_data(Tensor(np.ones((1, 1, 1, 1), np.float32)))
    x = np.zeros((1, 1, 9, 9), np.float32)
    x[0, 0, 4, 4] = 1.0
    y = block(Tensor(x)).asnumpy()[0, 0]
    expected = np.zeros((5, 5), np.float32)
    expected[2, 2] = 1  # output (i, j) is centred on input (i + 2, j + 2)
    np.testing.assert_allclose(y, expected, atol=1e-6)
    same = RepBlock(1, 1, 3, branch_bn=False, scale=False)
    same.dense[0].conv.weight.set_data(Tensor(np.zeros((1, 1, 3, 3), np.float32)))
    np.testing.assert_allclose(same(Tensor(x)).asnumpy(), x, atol=1e-6)  # the identity alone


@pytest.mark.parametrize("stride,groups", [(1, 1), (1, 4), (2, 1)])
def test_a_pointwise_block_has_parallel_1x1_branches_and_the_identity(stride, groups):
    ms.set_seed(stride)
    block = randomize_bn(RepBlock(4, 4, 1, stride=stride, padding=0, groups=groups, num_kxk=4), seed=groups)
    assert not block.has_scale and block.has_identity == (stride == 1)
    assert len(block.dense) == 4
    block.set_train(False)
    x = Tensor(np.random.default_rng(0).normal(size=(2, 4, 7, 7)).astype(np.float32))
    y = block(x).asnumpy()
    kernel, bias, _ = get_kind("rep").fold(state_of(block), "blk", block.reparam_info())
    assert kernel.shape == (4, 4 // groups, 1, 1)
    assert_close(y, reference_conv(x.asnumpy(), kernel, bias, groups, stride), TOL, "pointwise")
    block.switch_to_deploy()
    assert_close(block(x).asnumpy(), y, TOL, "pointwise, switched")


@pytest.mark.parametrize("geo", ["pad-half", "pad-0", "same"])
def test_the_one_conv_form_has_the_branch_forms_gradients(geo):
    """branch_bn=False trains as ONE conv over the summed kernel: the same outputs and gradients as the
    explicit sum of three k x k convs, the 1 x 1 conv on the centre tap and the identity, for every parameter;
    with a bias, and folded."""
    block = _block(3, 1, geo, "1", num_kxk=3, branch_bn=False, has_bias=True)
    rng = np.random.default_rng(5)
    for _, w in block.parameters_and_names():
        w.set_data(Tensor(rng.normal(size=w.shape).astype(np.float32)))
    assert block.has_identity == (geo != "pad-0")

    class Branches(nn.Cell):
        def __init__(self, b):
            super().__init__()
            self.b = b

        def construct(self, x):
            inner = x
            pad = 0 if geo == "pad-0" else 1
            out = ops.conv2d(inner, self.b.dense[0].conv.weight, pad_mode="pad", padding=pad)
            out = out + ops.conv2d(inner, self.b.dense[1].conv.weight, pad_mode="pad", padding=pad)
            out = out + ops.conv2d(inner, self.b.dense[2].conv.weight, pad_mode="pad", padding=pad)
            centre = inner if pad else inner[:, :, 1:inner.shape[2] - 1, 1:inner.shape[3] - 1]
            out = out + ops.conv2d(centre, self.b.scale.conv.weight)
            if pad:
                out = out + x
            return out + self.b.dense[0].conv.bias.reshape(1, -1, 1, 1)

    x = Tensor(rng.normal(size=(2, 4, 9, 9)).astype(np.float32))
    weights = ms.ParameterTuple(block.trainable_params())
    assert len(weights) == 5  # 3 k x k kernels (the first with the bias) and the 1 x 1 kernel
    y = block(x).asnumpy()
    assert_close(y, Branches(block)(x).asnumpy(), TOL, "outputs")
    for w, g1, g2 in zip(weights, Grads(block, weights)(x), Grads(Branches(block), weights)(x)):
        assert np.abs(g2.asnumpy()).max() > 0
        assert_close(g1.asnumpy(), g2.asnumpy(), TOL, w.name)
    assert block.reparam_info()["has_identity"] == block.has_identity
    block.switch_to_deploy()
    assert_close(block(x).asnumpy(), y, TOL, "one-conv form, switched")


def test_switch_to_deploy_on_a_network_renames():
    net = nn.SequentialCell([RepBlock(3, 4, 3, num_kxk=2), nn.ReLU(), RepBlock(4, 4, 3, pad_mode="same")])
    randomize_bn(net, seed=3)
    net.set_train(False)
    x = Tensor(np.random.default_rng(2).normal(size=(1, 3, 8, 8)).astype(np.float32))
    before = net(x).asnumpy()
    assert not net[0].has_identity and net[2].has_identity
    switch_to_deploy(net)
    assert sorted(p.name for p in net.get_parameters()) == ["0.fused_conv.bias", "0.fused_conv.weight",
                                                            "2.fused_conv.bias", "2.fused_conv.weight"]
    assert_close(net(x).asnumpy(), before, TOL)


def test_graph_mode_trains_and_folds():
    """The branch loop compiles in graph mode, in both forms."""
    ms.set_context(mode=ms.GRAPH_MODE)
    x = Tensor(np.random.default_rng(1).normal(size=(2, 4, 8, 8)).astype(np.float32))
    for kwargs in (dict(num_kxk=3), dict(num_kxk=2, branch_bn=False)):
        block = randomize_bn(RepBlock(4, 4, 3, **kwargs), seed=1)
        weights = block.trainable_params()
        grads = Grads(block, weights)(x)
        assert all(np.abs(g.asnumpy()).max() > 0 for g in grads)
        block.set_train(False)
        y = block(x).asnumpy()
        kernel, bias, _ = get_kind("rep").fold(state_of(block), "blk", block.reparam_info())
        assert_close(y, reference_conv(x.asnumpy(), kernel, bias, pads=(1,) * 4), TOL, str(kwargs))


@pytest.mark.parametrize("bad, match", [
    (dict(kernel_size=2), "kernel_size"), (dict(kernel_size=3.0), "kernel_size"), (dict(num_kxk=0), "num_kxk"),
    (dict(groups=3), "groups"), (dict(padding=-1), "padding"), (dict(has_bias=True), "has_bias"),
    (dict(pad_mode="full"), "pad_mode")])
def test_bad_arguments_fail_at_construction(bad, match):
    with pytest.raises(ValueError, match=match):
        RepBlock(4, 4, **dict(dict(kernel_size=3), **bad))


@pytest.mark.parametrize("options, fragment", [
    ({"num_kxk": 0}, "block option 'num_kxk' of rep: expected an integer >= 1, got 0"),
    ({"num_kxk": 1.5}, "block option 'num_kxk' of rep: expected an integer >= 1, got 1.5"),
    ({"num_kxk": True}, "block option 'num_kxk' of rep: expected an integer >= 1, got True"),
    ({"pointwise": "yes"}, "block option 'pointwise' of rep: expected True or False, got 'yes'"),
    ({"scale": 2}, "block option 'scale' of rep: expected True or False, got 2"),
    ({"num_kxks": 2}, "block_type rep has no option 'num_kxks' (did you mean 'num_kxk'?)"),
])
def test_bad_options_are_one_line_naming_the_option(options, fragment):
    with pytest.raises(ValueError) as err:
        check_block("rep", options)
    assert fragment in str(err.value) and "\n" not in str(err.value)
    assert check_block("rep", {"num_kxk": "4", "pointwise": "true"})[1] == dict(
        num_kxk=4, pointwise=True, scale=True, identity=True, branch_bn=True)


def test_bad_options_on_the_command_line_are_one_line():
    from conftest import assert_one_line_error, run_main

    res = run_main("train.py", "--model", "resnet18", "--block_type", "rep", "--block_options", "{num_kxk: 0}")
    assert_one_line_error(res, "block option 'num_kxk' of rep: expected an integer >= 1, got 0")
