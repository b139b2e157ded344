"""OREPA (online re-parameterization): the fold identities, the one-conv Cell against the explicit
branches (outputs and gradients), every geometry against its fold, and the kind through MindCV models,
checkpoints and the converter.  PyNative throughout (no graph to compile per case)."""
import itertools

import numpy as np
import pytest
from conftest import assert_close, assert_one_line_error, randomize_bn, run_main
from test_fold import grouped_conv

import mindspore as ms
from mindspore import Tensor, nn, ops

from acnet_ms.kinds import identities
from acnet_ms.kinds.orepa import fold as orepa_fold
from acnet_ms.kinds import get_kind
from acnet_ms.kinds.orepa.cell import OREPABlock

TOL = 1e-5      # float32, relative to the largest value compared
GRAD_TOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def pynative():
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=mode)


def randomize(block, seed=0):
    """Random values for every parameter of an OREPA block, the branch scales in [0.2, 1] (every branch
    counts; the paper's start has the prior's at 0)."""
    rng = np.random.default_rng(seed)
    for name, p in block.parameters_and_names():
        if name.endswith("orepa_vector"):
            value = rng.uniform(0.2, 1.0, p.shape)
        else:
            value = rng.normal(0, 0.5, p.shape)
        p.set_data(Tensor(value.astype(np.float32)))
    return block


def block_state(block, prefix="blk"):
    return {f"{prefix}.{name}": p.asnumpy() for name, p in block.parameters_and_names()}


# ---------------------------------------------------------------- fold identities (numpy, float64)

def avg_pool(x, k, stride, pad):
    """k x k average pooling, zeros padded and counted (float64 reference)."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (xp.shape[2] - k) // stride + 1, (xp.shape[3] - k) // stride + 1
    return np.mean([xp[:, :, a:a + stride * (oh - 1) + 1:stride, b:b + stride * (ow - 1) + 1:stride]
                    for a in range(k) for b in range(k)], axis=0)


def test_prior_filter_is_the_originals_cosines():
    """The original (k = 3): cos(pi (h + .5)(i + 1) / 3) for the first half of the channels, the same
    along w with i + 1 - C/2 for the second; any k divides by k."""
    f = orepa_fold.prior_filter(6, 3)
    for i, h, w in itertools.product(range(6), range(3), range(3)):
        expected = np.cos(np.pi * (h + 0.5) * (i + 1) / 3) if i < 3 else np.cos(np.pi * (w + 0.5) * (i - 2) / 3)
        assert abs(f[i, h, w] - expected) < 1e-12
    f5 = orepa_fold.prior_filter(5, 5)  # odd channel count: C/2 = 2.5, as in the original
    assert abs(f5[3, 0, 4] - np.cos(np.pi * 4.5 * 1.5 / 5)) < 1e-12 and f5.shape == (5, 5, 5)


@pytest.mark.parametrize("groups,stride,pad", [(1, 1, 1), (2, 2, 0), (4, 2, 1)])
def test_a_1x1_conv_then_a_channel_filter_and_a_depthwise_then_pointwise_conv_are_one_conv(groups, stride, pad):
    rng = np.random.default_rng(groups + stride)
    c, o, k, m = 4, 8, 3, 3
    x = rng.normal(size=(2, c, 9, 8))
    k1, filt = rng.normal(size=(o, c // groups, 1, 1)), rng.normal(size=(o, k, k))
    mid = grouped_conv(x, k1, groups)
    expected = grouped_conv(mid, filt[:, None], o, stride, (pad, pad))
    np.testing.assert_allclose(grouped_conv(x, orepa_fold.merge_1x1_filter(k1, filt), groups, stride, (pad, pad)),
                               expected, atol=1e-10)
    dw, pw = rng.normal(size=(m * c, 1, k, k)), rng.normal(size=(o, m * c // groups, 1, 1))
    expected = grouped_conv(grouped_conv(x, dw, c, stride, (pad, pad)), pw, groups)
    merged = orepa_fold.merge_depthwise_pointwise(dw, pw, c, groups)
    assert merged.shape == (o, c // groups, k, k)
    np.testing.assert_allclose(grouped_conv(x, merged, groups, stride, (pad, pad)), expected, atol=1e-10)


def random_branches(rng, c, o, k, groups):
    t = c if groups <= 4 else 2 * c
    cg = c // groups
    return {"origin": rng.normal(size=(o, cg, k, k)), "avg": rng.normal(size=(o, cg, 1, 1)),
            "prior": rng.normal(size=(o, cg, 1, 1)),
            "1x1_kxk": (rng.normal(size=(t, cg, 1, 1)), rng.normal(size=(o, t // groups, k, k))),
            "1x1": rng.normal(size=(o, cg, 1, 1)),
            "dws": (rng.normal(size=(8 * c, 1, k, k)), rng.normal(size=(o, 8 * cg, 1, 1)))}


@pytest.mark.parametrize("k,stride,pad,groups", [(3, 1, 1, 1), (3, 2, 0, 2), (5, 2, 2, 8), (5, 1, 0, 1)])
def test_fold_orepa_equals_the_six_branches_on_the_input(k, stride, pad, groups):
    """Each branch as the original computes it, on the input: conv; 1x1 then k x k average pooling; 1x1
    then the prior filter; 1x1 (identity + delta) then k x k; the 1x1 on the window's centre;
    depthwise k x k then 1x1 -- each scaled per output channel, summed."""
    rng = np.random.default_rng(k + stride + groups)
    c = o = 8 if groups == 8 else 4
    if groups == 1:
        o = 6
    b = random_branches(rng, c, o, k, groups)
    v = rng.uniform(0.2, 1.0, (6, o))
    x = rng.normal(size=(2, c, 10, 11))
    p, cg, s = (pad, pad), c // groups, (lambda y, i: y * v[i].reshape(1, -1, 1, 1))  # noqa: E731
    prior = orepa_fold.prior_filter(o, k)[:, None]
    first = b["1x1_kxk"][0] + identities.identity_kernel(b["1x1_kxk"][0].shape[0], cg, 1)
    xc = np.pad(x, ((0, 0), (0, 0), p, p))[:, :, k // 2:x.shape[2] + 2 * pad - k // 2,
                                            k // 2:x.shape[3] + 2 * pad - k // 2]
    expected = (s(grouped_conv(x, b["origin"], groups, stride, p), 0)
                + s(avg_pool(grouped_conv(x, b["avg"], groups), k, stride, pad), 1)
                + s(grouped_conv(grouped_conv(x, b["prior"], groups), prior, o, stride, p), 2)
                + s(grouped_conv(grouped_conv(x, first, groups), b["1x1_kxk"][1], groups, stride, p), 3)
                + s(grouped_conv(xc, b["1x1"], groups, stride), 4)
                + s(grouped_conv(grouped_conv(x, b["dws"][0], c, stride, p), b["dws"][1], groups), 5))
    kernel = orepa_fold.fold_orepa(b, v, groups)
    np.testing.assert_allclose(grouped_conv(x, kernel, groups, stride, p), expected, atol=1e-9)
    # a subset of the branches folds the same way (the vector has a row per branch present)
    some = {n: b[n] for n in ("origin", "prior", "dws")}
    expected = (s(grouped_conv(x, b["origin"], groups, stride, p), 0)
                + s(grouped_conv(grouped_conv(x, b["prior"], groups), prior, o, stride, p), 2)
                + s(grouped_conv(grouped_conv(x, b["dws"][0], c, stride, p), b["dws"][1], groups), 5))
    np.testing.assert_allclose(grouped_conv(x, orepa_fold.fold_orepa(some, v[[0, 2, 5]], groups), groups, stride, p),
                               expected, atol=1e-9)


# ---------------------------------------------------------------- the Cell against the explicit branches

class Explicit(nn.Cell):
    """The six branches as separate ops on the input (the original's multi-branch linear form, no BN),
    each scaled per output channel, summed; the same Parameters as ``block``."""

    def __init__(self, block, pad):
        super().__init__()
        self.b, self.pad = block, pad
        k, o = block.kernel_size, block.out_channels
        self.prior = Tensor(orepa_fold.prior_filter(o, k)[:, None].astype(np.float32))
        self.identity = Tensor(identities.identity_kernel(block.internal, block.in_channels // block.groups, 1,
                                                    np.float32))

    def construct(self, x):
        b, p, g, s = self.b, self.pad, self.b.groups, self.b.stride
        k, o, c = b.kernel_size, b.out_channels, b.in_channels
        v = b.orepa_vector.reshape(6, 1, o, 1, 1)

        def conv(y, w, stride=1, padding=0, groups=g):
            return ops.conv2d(y, w, stride=stride, pad_mode="pad", padding=padding, groups=groups)

        out = conv(x, b.orepa_origin, s, p) * v[0]
        out = out + ops.avg_pool2d(conv(x, b.orepa_avg), k, s, p, count_include_pad=True) * v[1]
        out = out + conv(conv(x, b.orepa_prior), self.prior, s, p, o) * v[2]
        out = out + conv(conv(x, b.orepa_1x1_kxk_idconv1 + self.identity), b.orepa_1x1_kxk_conv2, s, p) * v[3]
        h, w = x.shape[2] + 2 * p, x.shape[3] + 2 * p
        centre = ops.pad(x, (p, p, p, p))[:, :, k // 2:h - k // 2, k // 2:w - k // 2]
        out = out + conv(centre, b.orepa_1x1, s) * v[4]
        return out + conv(conv(x, b.orepa_dw, s, p, c), b.orepa_pw) * v[5]


class Grads(nn.Cell):
    """Gradients of sum(net(x) * r) with respect to ``weights``."""

    def __init__(self, net, weights):
        super().__init__()
        self.net = net
        self.grad = ops.GradOperation(get_by_list=True)
        self.weights = ms.ParameterTuple(weights)

    def loss(self, x, r):
        return (self.net(x) * r).sum()

    def construct(self, x, r):
        return self.grad(self.loss, self.weights)(x, r)


EXPLICIT_CASES = [(3, 1, g, s) for g in ("1", "2", "dw") for s in (1, 2)] + [(3, 0, "1", 2), (5, 2, "dw", 1),
                                                                            (5, 0, "2", 2)]


@pytest.mark.parametrize("k,pad,groups,stride", EXPLICIT_CASES)
def test_one_conv_has_the_explicit_branches_function_and_gradients(k, pad, groups, stride):
    cin, cout = (6, 6) if groups == "dw" else (4, 6)
    g = cin if groups == "dw" else int(groups)
    block = randomize(OREPABlock(cin, cout, k, stride=stride, padding=pad, groups=g), seed=k + stride + g)
    explicit = Explicit(block, pad)
    rng = np.random.default_rng(7)
    x = Tensor(rng.normal(size=(2, cin, 11, 10)).astype(np.float32))
    y = block(x)
    assert_close(y.asnumpy(), explicit(x).asnumpy(), TOL, "outputs")
    r = Tensor(rng.normal(size=y.shape).astype(np.float32))
    weights = block.trainable_params()
    assert len(weights) == 9
    for w, g1, g2 in zip(weights, Grads(block, weights)(x, r), Grads(explicit, weights)(x, r)):
        assert np.abs(g2.asnumpy()).max() > 0, w.name
        assert_close(g1.asnumpy(), g2.asnumpy(), GRAD_TOL, w.name)


# ---------------------------------------------------------------- every geometry: eval == deploy == numpy fold

GEOMETRIES = {"pad_half": dict(pad_mode="pad"), "pad_zero": dict(pad_mode="pad", padding=0),
              "same": dict(pad_mode="same"), "valid": dict(pad_mode="valid")}
CASES = list(itertools.product((3, 5), (1, 2), GEOMETRIES, ("1", "2", "dw")))


@pytest.mark.parametrize("case", CASES, ids=lambda c: "k{}-s{}-{}-g{}".format(*c))
def test_every_geometry_equals_its_folded_conv_and_trains(case):
    k, stride, geometry, groups = case
    cin, cout = (4, 4) if groups == "dw" else (4, 6)
    g = cin if groups == "dw" else int(groups)
    opts = dict(GEOMETRIES[geometry])
    if geometry == "pad_half":
        opts["padding"] = k // 2
    block = randomize(OREPABlock(cin, cout, k, stride=stride, groups=g, **opts), seed=len(CASES))
    rng = np.random.default_rng(k * stride)
    x = Tensor(rng.normal(size=(2, cin, 12, 11)).astype(np.float32))
    block.set_train(True)
    weights = block.trainable_params()
    grads = Grads(block, weights)(x, Tensor(np.ones(block(x).shape, np.float32)))
    for w, grad in zip(weights, grads):
        grad = grad.asnumpy()
        assert np.isfinite(grad).all() and np.abs(grad).max() > 0, f"no gradient reaches {w.name}"
    block.set_train(False)
    y = block(x).asnumpy()
    assert np.isfinite(y).all() and np.abs(y).max() > 0.1
    plain = nn.Conv2d(cin, cout, k, stride=stride, group=g, **opts)
    assert y.shape == plain(x).shape
    kernel, bias, names = get_kind("orepa").fold(block_state(block), "blk", block.reparam_info())
    assert bias is None and len(names) == 9
    plain.weight.set_data(Tensor(kernel))
    assert_close(plain(x).asnumpy(), y, TOL, "numpy fold")
    block.switch_to_deploy()
    assert [n for n, _ in block.cells_and_names()] == ["", "fused_conv"]
    assert [p.name for p in block.get_parameters()] == ["fused_conv.weight"]
    assert_close(block(x).asnumpy(), y, TOL, "deployed")


def test_a_bias_and_dilation_fold_too():
    block = randomize(OREPABlock(4, 6, 3, stride=2, padding=(2, 1, 0, 2), dilation=2, has_bias=True), seed=3)
    x = Tensor(np.random.default_rng(3).normal(size=(1, 4, 13, 12)).astype(np.float32))
    block.set_train(False)
    y = block(x).asnumpy()
    kernel, bias, names = get_kind("orepa").fold(block_state(block), "blk", block.reparam_info())
    assert names[-1] == "blk.orepa_bias"
    np.testing.assert_array_equal(bias, block.orepa_bias.asnumpy())
    block.switch_to_deploy()
    np.testing.assert_array_equal(block.fused_conv.weight.asnumpy(), kernel)
    assert_close(block(x).asnumpy(), y, TOL, "bias, dilation 2, uneven padding")


@pytest.mark.parametrize("branches", ["origin", "origin,avg,prior,1x1", "origin,1x1_kxk", "origin,dws"])
def test_branch_subsets_hold_only_their_parameters_and_fold(branches):
    block = randomize(OREPABlock(4, 4, 3, groups=2, branches=branches.split(",")), seed=1)
    assert block.branches == branches
    kind = get_kind("orepa")
    names = kind.entries("blk", block.reparam_info())
    assert sorted(names) == sorted(block_state(block))
    assert block.orepa_vector.shape == (len(branches.split(",")), 4)
    x = Tensor(np.random.default_rng(1).normal(size=(2, 4, 8, 8)).astype(np.float32))
    y = block(x).asnumpy()
    kernel, _, _ = kind.fold(block_state(block), "blk", block.reparam_info())
    assert_close(ops.conv2d(x, Tensor(kernel), pad_mode="pad", padding=1, groups=2).asnumpy(), y, TOL, branches)


def test_the_paper_start_and_the_single_start():
    block = OREPABlock(4, 6, 3, seed=2)
    np.testing.assert_array_equal(block.orepa_vector.asnumpy()[:, 0], [0.25, 0.25, 0, 0.5, 1, 0.5])
    assert not block.orepa_1x1_kxk_idconv1.asnumpy().any()  # the first conv starts at the identity
    single = OREPABlock(4, 6, 3, init="single", seed=2)
    single.set_train(False)
    x = Tensor(np.random.default_rng(2).normal(size=(1, 4, 7, 7)).astype(np.float32))
    expected = ops.conv2d(x, single.orepa_origin, pad_mode="pad", padding=1).asnumpy()
    assert_close(single(x).asnumpy(), expected, TOL, "single start = the origin conv")


def test_training_costs_one_conv_plus_a_batch_independent_kernel_generation():
    block = OREPABlock(64, 64, 3, stride=2)
    macs = block.macs((8, 64, 32, 32))
    assert macs["conv"] == 8 * 16 * 16 * 64 * 64 * 9
    assert macs["kernel"] == 64 * 64 * 9 * (2 * 6 + 64 + 8)  # six products and sums, T/g = 64, M = 8
    assert OREPABlock(64, 64, 3, branches="origin,avg").macs((1, 64, 8, 8))["kernel"] == 64 * 64 * 9 * 4


@pytest.mark.parametrize("bad, match", [(dict(kernel_size=4), "kernel_size"), (dict(kernel_size=1), "kernel_size"),
                                        (dict(groups=3), "groups"), (dict(init="zero"), "init"),
                                        (dict(branches="avg,dws"), "origin"), (dict(branches="origin,skip"), "skip"),
                                        (dict(pad_mode="full"), "pad_mode")])
def test_bad_arguments_fail_at_construction(bad, match):
    args = dict(kernel_size=3)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        OREPABlock(4, 4, **args)


def test_one_train_step_at_every_amp_level_trains_and_folds():
    """O1 casts inside the white-listed ops, O2/O3 cast the input to float16: the kernel is cast to the
    input's type, the parameters stay float32."""
    from test_optimizers_amp import ThreeKinds, batch, train_one_step

    from acnet_ms.reparam.state import fold_state
    from acnet_ms.reparam.transform import block_layout, to_blocks, trace

    def three(seed=0):
        ms.set_seed(seed)
        net = ThreeKinds()
        return to_blocks(net, trace(net, (1, 3, 16, 16)), "orepa")

    for amp_level in ("O1", "O2", "O3"):
        net = randomize_bn(three(), seed=2)
        assert {k: v["slot"] for k, v in block_layout(net).items()} == dict(conv_bn="none", conv_bias="bias",
                                                                             conv_plain="none")
        mode = ms.get_context("mode")
        ms.set_context(mode=ms.GRAPH_MODE)
        try:
            _, loss = train_one_step(net, "momentum", amp_level)
        finally:
            ms.set_context(mode=mode)
        assert np.isfinite(loss)
        params = {p.name: p.asnumpy().astype(np.float32) for p in net.get_parameters()}
        assert all(v.dtype == np.float32 for v in params.values())
        reference = three()
        ms.load_param_into_net(reference, {k: ms.Parameter(Tensor(v), name=k) for k, v in params.items()},
                               strict_load=True)
        folded, _ = fold_state(params, block_layout(reference))
        plain = ThreeKinds()
        ms.load_param_into_net(plain, {k: ms.Parameter(Tensor(v), name=k) for k, v in folded.items()},
                               strict_load=True)
        x, _ = batch(seed=4)
        reference.set_train(False)
        plain.set_train(False)
        assert_close(plain(x).asnumpy(), reference(x).asnumpy(), 1e-4, f"fold after {amp_level}")


# ---------------------------------------------------------------- the kind through MindCV models

#: families: plain (resnet18), depthwise (mobilenet_v2), grouped (regnet_x, resnext), squeeze-excite + depthwise
#: 5 x 5 (mobilenet_v3, efficientnet), convs with bias and no BN (squeezenet), pre-activation (densenet121: convs
#: after BN-ReLU feeding a concat, no BN after them)
#: (each 1-9 s on an idle machine, most of it generating the 256- and 512-channel kernels in PyNative)
FAMILIES = ["resnet18", "mobilenet_v2_035_96", "regnet_x_200mf", "mobilenet_v3_small_075", "squeezenet1_1",
            "densenet121"] + [pytest.param(n, marks=pytest.mark.slow) for n in ("efficientnet_b0", "resnext50_32x4d")]


def orepa_model(name, seed=1, **options):
    from acnet_ms import create_model

    ms.set_seed(seed)
    net = randomize_bn(create_model(name, num_classes=10, block_type="orepa", block_options=options or None),
                       seed=seed + 1)
    rng = np.random.default_rng(seed)
    for p in net.get_parameters():  # every branch counts
        if p.name.endswith(".orepa_vector"):
            p.set_data(Tensor(rng.uniform(0.05, 0.3, p.shape).astype(np.float32)))
    net.set_train(False)
    return net


def stock_logits(name, arrays, x):
    import mindcv

    from acnet_ms.io.checkpoint import read_checkpoint

    stock = mindcv.create_model(name, num_classes=10)
    arrays = read_checkpoint(arrays)[0] if isinstance(arrays, str) else arrays
    assert list(arrays) == [p.name for p in stock.get_parameters()]  # names and order
    assert ms.load_param_into_net(stock, {k: ms.Parameter(Tensor(v), name=k) for k, v in arrays.items()},
                                  strict_load=True) == ([], [])
    stock.set_train(False)
    return stock(x).asnumpy()


@pytest.mark.parametrize("name", FAMILIES)
def test_an_orepa_model_converts_to_the_stock_mindcv_checkpoint(name, tmp_path):
    from acnet_ms import block_summary
    from acnet_ms.io.checkpoint import write_checkpoint
    from acnet_ms.convert.pipeline import convert_checkpoint

    net = orepa_model(name)
    report = block_summary(net)
    assert report["blocks"] == sum(type(c).__name__ == "OREPABlock" for _, c in net.cells_and_names()) > 0
    assert set(report["kinds"]) <= {"kernel alone", "kernel + conv bias"}
    if name == "squeezenet1_1":
        assert report["kinds"] == {"kernel + conv bias": report["blocks"]}
    src, dst = str(tmp_path / "orepa.ckpt"), str(tmp_path / "plain.ckpt")
    arrays = {p.name: p.asnumpy() for p in net.get_parameters()}
    arrays.update({"moments." + k: np.full_like(v, 0.5) for k, v in list(arrays.items())})
    write_checkpoint(src, arrays, dict(model=name, block_type="orepa", num_classes=10))
    summary = convert_checkpoint(src, dst, log=lambda *_: None)
    assert summary["blocks"] == report["blocks"]
    x = Tensor(np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32))
    expected = net(x).asnumpy()
    assert np.abs(expected).max() > 0
    assert_close(stock_logits(name, dst, x), expected, 1e-4, name)


def test_the_summary_line_and_which_sites(capsys):
    from acnet_ms import summary_line

    from acnet_ms import create_model
    net = create_model("resnet18", num_classes=10, block_type="orepa")
    assert summary_line(net) == "17 k x k convs became OREPA blocks (17 kernel alone; the model's BN after one stays)"
    assert type(net.conv1).__name__ == "OREPABlock" and type(net.bn1).__name__ == "BatchNorm2d"  # the BN stays
    kind = get_kind("orepa")
    from acnet_ms.reparam.transform import ConvSite
    assert kind.eligible(ConvSite((1, 1), False), {}) is False
    assert kind.eligible(ConvSite((1, 7), False), {}) == "non-square kernel 1x7"
    assert kind.eligible(ConvSite((4, 4), False), {}) == "kernel 4x4 (OREPA takes odd k >= 3)"
    assert kind.eligible(ConvSite((7, 7), False), {}) is True


def test_a_stock_checkpoint_starts_an_orepa_model_at_the_same_function(tmp_path):
    """from_plain: the plain kernel is the origin (scale 1), every other branch scaled by 0 but not zero
    itself (so the scales get gradients)."""
    import mindcv

    from acnet_ms import create_model
    from acnet_ms.io.checkpoint import load_pretrained, write_checkpoint

    ms.set_seed(3)
    stock = randomize_bn(mindcv.create_model("mobilenet_v2_035_96", num_classes=10), seed=3)
    path = str(tmp_path / "stock.ckpt")
    write_checkpoint(path, {p.name: p.asnumpy() for p in stock.get_parameters()}, dict(model="mobilenet_v2_035_96"))
    net = create_model("mobilenet_v2_035_96", num_classes=10, block_type="orepa")
    loaded = load_pretrained(net, path, log=lambda *_: None)
    assert len(loaded) == len(list(net.get_parameters()))
    vectors = [p.asnumpy() for p in net.get_parameters() if p.name.endswith(".orepa_vector")]
    assert vectors and all((v[0] == 1).all() and not v[1:].any() for v in vectors)
    assert all(np.abs(p.asnumpy()).max() > 0 for p in net.get_parameters() if p.name.endswith(".orepa_dw"))
    x = Tensor(np.random.default_rng(4).normal(size=(2, 3, 64, 64)).astype(np.float32))
    net.set_train(False)
    stock.set_train(False)
    assert_close(net(x).asnumpy(), stock(x).asnumpy(), 1e-4, "finetuning start")


def test_a_checkpoint_without_metadata_shows_its_branches(tmp_path):
    from acnet_ms.io.checkpoint import write_checkpoint
    from acnet_ms.convert.pipeline import convert_checkpoint
    from acnet_ms.reparam.state import infer_block

    net = orepa_model("resnet18", branches="origin,prior,dws", init="single")
    arrays = {p.name: p.asnumpy() for p in net.get_parameters()}
    assert infer_block(arrays) == ("orepa", {"branches": "origin,prior,dws"}, ["init"])
    src, dst = str(tmp_path / "bare.ckpt"), str(tmp_path / "plain.ckpt")
    write_checkpoint(src, arrays, None)
    said = []
    summary = convert_checkpoint(src, dst, model="resnet18", num_classes=10, log=said.append)
    assert summary["blocks"] == 17
    assert any("assumed the defaults init='paper'" in line for line in said), said
    x = Tensor(np.random.default_rng(5).normal(size=(1, 3, 64, 64)).astype(np.float32))
    assert_close(stock_logits("resnet18", dst, x), net(x).asnumpy(), 1e-4, "metadata-free")


@pytest.mark.parametrize("options, fragment", [
    ("{branches: origin+skip}", "block option 'branches' of orepa: unknown branch 'skip'"),
    ("{branches: avg}", "block option 'branches' of orepa: the branches must include origin"),
    ("{init: zero}", "block option 'init' of orepa must be one of paper, single, got 'zero'"),
    ("{inits: paper}", "block_type orepa has no option 'inits' (did you mean 'init'?)"),
])
def test_bad_options_are_one_line_naming_the_option(tmp_path, options, fragment):
    res = run_main("train.py", "--model", "resnet18", "--block_type", "orepa", "--block_options", options,
                   "--data_dir", str(tmp_path), "--ckpt_save_dir", str(tmp_path / "run"))
    assert_one_line_error(res, fragment)
