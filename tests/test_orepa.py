"""What is OREPA's own: its fold identities, the one-conv Cell against the explicit branches (outputs and
gradients), branch subsets, its starts, its MAC count, its sites' words and what from_plain sets.  Geometry,
folds, gradients, from_plain, options, AMP and MindCV families: tests/test_kind_contract.py."""
import itertools

import numpy as np
import pytest
from helpers import Grads, assert_close, assert_sample_sweep, SAMPLE_PARTS
from test_fold import grouped_conv

from mindspore import Tensor, nn, ops

from acnet_ms.kinds import identities
from acnet_ms.kinds.orepa import fold as orepa_fold
from acnet_ms.kinds import get_kind
from acnet_ms.kinds.orepa.cell import OREPABlock

TOL = 1e-5      # float32, relative to the largest value compared
GRAD_TOL = 1e-4


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
    macs = get_kind("orepa").macs(64, 64, 3, stride=2, height=32, batch=8)
    assert macs["plain"] == macs["branches"]["conv"] == 8 * 16 * 16 * 64 * 64 * 9
    assert macs["branches"]["kernel"] == 64 * 64 * 9 * (2 * 6 + 64 + 8)  # six products and sums, T/g = 64, M = 8
    assert get_kind("orepa").macs(64, 64, 3, {"branches": "origin,avg"}, height=8)["branches"]["kernel"] \
        == 64 * 64 * 9 * 4


@pytest.mark.parametrize("bad, match", [(dict(kernel_size=4), "kernel_size"), (dict(kernel_size=1), "kernel_size"),
                                        (dict(groups=3), "groups"), (dict(init="zero"), "init"),
                                        (dict(branches="avg,dws"), "origin"), (dict(branches="origin,skip"), "skip"),
                                        (dict(pad_mode="full"), "pad_mode")])
def test_bad_arguments_fail_at_construction(bad, match):
    args = dict(kernel_size=3)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        OREPABlock(4, 4, **args)


# ---------------------------------------------------------------- the kind through MindCV models

def test_the_summary_line_and_which_sites(capsys):
    from acnet_ms import summary_line

    from acnet_ms import create_model
    net = create_model("resnet18", num_classes=10, block_type="orepa")
    assert summary_line(net) == "17 k x k convs became OREPA blocks (17 kernel alone; the model's BN after one stays)"
    assert get_kind("orepa").summary_words(0, {}) == "0 k x k convs became OREPA blocks"  # no "(; ...)"
    assert type(net.conv1).__name__ == "OREPABlock" and type(net.bn1).__name__ == "BatchNorm2d"  # the BN stays
    kind = get_kind("orepa")
    from acnet_ms.reparam.transform import ConvSite
    assert kind.eligible(ConvSite((1, 1), False), {}) is False
    assert kind.eligible(ConvSite((1, 7), False), {}) == "non-square kernel 1x7"
    assert kind.eligible(ConvSite((4, 4), False), {}) == "kernel 4x4 (OREPA takes odd k >= 3)"
    assert kind.eligible(ConvSite((7, 7), False), {}) is True


class BNAndBNFree(nn.Cell):
    """conv -> BN -> ReLU, then a BN-free residual depthwise conv (CMT's ``x + dwconv(x)``)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, pad_mode="pad", padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, pad_mode="pad", padding=1, group=8)

    def construct(self, x):
        x = ops.relu(self.bn(self.conv(x)))
        return x + self.dw(x)


@pytest.mark.parametrize("init, after_bn, bn_free", [(None, "paper", "single"), ("paper", "paper", "paper"),
                                                     ("single", "single", "single")])
def test_init_auto_starts_the_papers_way_before_a_bn_and_as_the_conv_where_no_bn_follows(init, after_bn, bn_free):
    """The default start: the original's branch scales where a BN follows (it always has one), the origin alone
    at a BN-free site, where the paper's Kaiming-scale branches would generate a kernel far larger than the
    conv's (CMT overflowed float16); an explicit init holds at every site."""
    from acnet_ms.kinds.orepa.spec import INITS
    from acnet_ms.reparam.transform import to_blocks, trace

    net = BNAndBNFree()
    before = {name: conv.weight.asnumpy() for name, conv in (("conv", net.conv), ("dw", net.dw))}
    to_blocks(net, trace(net, (1, 3, 8, 8)), "orepa", {} if init is None else {"init": init})
    for cell, start in ((net.conv, after_bn), (net.dw, bn_free)):
        np.testing.assert_array_equal(cell.orepa_vector.asnumpy()[:, 0], list(INITS[start].values()))
    assert type(net.bn).__name__ == "BatchNorm2d"  # OREPA leaves the model's BN where it is
    if bn_free == "single":  # the BN-free block computes the conv it replaced
        net.dw.set_train(False)
        x = Tensor(np.random.default_rng(4).normal(size=(1, 8, 6, 6)).astype(np.float32))
        expected = ops.conv2d(x, Tensor(before["dw"]), pad_mode="pad", padding=1, groups=8).asnumpy()
        assert_close(net.dw(x).asnumpy(), expected, TOL, "the BN-free block at its start")


def test_from_plain_scales_the_origin_by_one_and_every_other_branch_by_zero():
    """The plain kernel is the origin (scale 1), every other branch scaled by 0 but not zero itself (so the
    scales get gradients)."""
    kind = get_kind("orepa")
    block = OREPABlock(4, 4, 3, groups=4, seed=2)
    info = dict(block.reparam_info(), slot="none", bn=None)
    weight = np.random.default_rng(3).normal(size=(4, 1, 3, 3)).astype(np.float32)
    state = kind.from_plain({"blk.weight": weight}, "blk", info)
    vector = state["blk.orepa_vector"]
    assert (vector[0] == 1).all() and not vector[1:].any()
    np.testing.assert_array_equal(state["blk.orepa_origin"], weight)
    assert np.abs(state["blk.orepa_dw"]).max() > 0


@pytest.mark.parametrize("part", SAMPLE_PARTS)
def test_the_sample_sweep_trains_converts_and_strict_loads_each_site_type(part, tmp_path):
    """A MindCV model per site type (BN-free, grouped, depthwise, dilated, a deep ResNet) through the zoo sweep's
    stages with orepa blocks: a train step under the recipe's AMP level in PyNative (and graph mode for the cheap
    ones), conversion, strict load, the folded function; ``ci``: the BN-free model in PyNative, ``zoo``: the rest
    (``make test-all``)."""
    assert_sample_sweep("orepa", tmp_path, part)
