"""What is DBB's own: its fold and Cell against a float64 reference of the original block's branches, the
original's state-dict names, BN-and-pad, the one-conv form's gradients, its sites' words and MAC count, and
graph-mode steps at mixed precision.  Geometry, folds, gradients, from_plain, options, AMP and MindCV families:
tests/test_kind_contract.py."""
import itertools

import numpy as np
import pytest
from helpers import Grads, assert_close, randomize_block, randomize_bn, assert_sample_sweep, SAMPLE_PARTS
from test_fold import bn as bn_ref
from test_fold import conv2d

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from acnet_ms.kinds.dbb import fold as dbb_fold
from acnet_ms.kinds import identities
from acnet_ms.kinds import check_block, get_kind
from acnet_ms.kinds.dbb.kind import rename_torch_state
from acnet_ms.kinds.dbb.cell import DiverseBranchBlock
from acnet_ms.reparam.switch import switch_to_deploy
from acnet_ms.kinds import geometry
from acnet_ms.kinds.dbb.cell import PadBatchNorm
from acnet_ms.kinds.cell import name_params

TOL = 2e-5   # float32 against float64 references, relative to the output's scale
KIND = get_kind("dbb")


# ------------------------------------------------------------------ a float64 reference of the original's forward

def conv(x, w, stride=1, pads=(0, 0, 0, 0), dilation=1, groups=1):
    """NCHW grouped cross-correlation with (top, bottom, left, right) zero padding (float64)."""
    x = np.pad(x, ((0, 0), (0, 0), pads[:2], pads[2:]))
    ci, co = x.shape[1] // groups, w.shape[0] // groups
    return np.concatenate([conv2d(x[:, g * ci:(g + 1) * ci], w[g * co:(g + 1) * co], stride, (0, 0), dilation)
                           for g in range(groups)], axis=1)


def _bn(y, p, name, eps=identities.BN_EPS):
    if f"{name}.gamma" not in p:
        return y
    return bn_ref(y, *(p[f"{name}.{f}"] for f in identities.BN_FIELDS), eps=eps)


def _bn_and_pad(y, p, name, pads):
    """The original's BNAndPadLayer: BN, then pad with the BN's value for a zero input (0 without BN)."""
    y = _bn(y, p, name)
    value = _bn(np.zeros((1, y.shape[1], 1, 1)), p, name)
    return np.pad(y - value, ((0, 0), (0, 0), pads[:2], pads[2:])) + value


def dbb_reference(x, p, k, stride, pads, dilation, groups):
    """The DBB's eval-mode output, branch by branch, from its entries ``p`` (float64): every branch reads
    the k x k window of the origin conv (the 1 x 1 its centre tap, the average its k x k taps)."""
    c, d = k // 2, dilation
    out = _bn(conv(x, p["dbb_origin.conv.weight"], stride, pads, d, groups), p, "dbb_origin.bn")
    ho, wo = out.shape[2:]
    if "dbb_1x1.conv.weight" in p:
        centre = np.pad(x, ((0, 0), (0, 0), pads[:2], pads[2:]))[:, :, d * c:, d * c:]
        y = conv(centre, p["dbb_1x1.conv.weight"], stride, groups=groups)[:, :, :ho, :wo]
        out = out + _bn(y, p, "dbb_1x1.bn")
    if "dbb_avg.conv.weight" in p or "dbb_avg.avgbn.gamma" in p:
        if "dbb_avg.conv.weight" in p:
            y = _bn_and_pad(conv(x, p["dbb_avg.conv.weight"], groups=groups), p, "dbb_avg.bn.bn", pads)
        else:
            y = np.pad(x, ((0, 0), (0, 0), pads[:2], pads[2:]))
        taps = [y[:, :, a * d:a * d + stride * (ho - 1) + 1:stride, b * d:b * d + stride * (wo - 1) + 1:stride]
                for a in range(k) for b in range(k)]
        out = out + _bn(np.mean(taps, axis=0), p, "dbb_avg.avgbn")
    if "dbb_1x1_kxk.idconv1.weight" in p:
        first = p["dbb_1x1_kxk.idconv1.weight"] + identities.identity_kernel(*p["dbb_1x1_kxk.idconv1.weight"].shape[:2], 1)
    else:
        first = p["dbb_1x1_kxk.conv1.weight"]
    y = _bn_and_pad(conv(x, first, groups=groups), p, "dbb_1x1_kxk.bn1.bn", pads)
    out = out + _bn(conv(y, p["dbb_1x1_kxk.conv2.weight"], stride, dilation=d, groups=groups), p, "dbb_1x1_kxk.bn2")
    if "dbb_origin.conv.bias" in p:
        out = out + p["dbb_origin.conv.bias"].reshape(1, -1, 1, 1)
    return out


def _random_entries(rng, cin, cout, k, groups, branch_bn=True, has_bias=False):
    depthwise = groups == cin == cout
    internal = 2 * cin if depthwise else cin
    names = KIND.branch_entries("", branch_bn, depthwise, internal == cin, has_bias)
    shapes = {"dbb_origin.conv.weight": (cout, cin // groups, k, k), "dbb_1x1.conv.weight": (cout, cin // groups, 1, 1),
              "dbb_avg.conv.weight": (cout, cin // groups, 1, 1),
              "dbb_1x1_kxk.idconv1.weight": (cin, cin // groups, 1, 1),
              "dbb_1x1_kxk.conv1.weight": (internal, cin // groups, 1, 1),
              "dbb_1x1_kxk.conv2.weight": (cout, internal // groups, k, k), "dbb_origin.conv.bias": (cout,)}
    p = {}
    for name in (n[1:] for group in names.values() for n in group):
        field = name.rsplit(".", 1)[1]
        n = internal if ".bn1." in name else cout
        p[name] = {"gamma": lambda: rng.uniform(0.5, 1.5, n), "beta": lambda: rng.normal(0, 0.5, n),
                   "moving_mean": lambda: rng.normal(0, 0.5, n),
                   "moving_variance": lambda: rng.uniform(0.5, 2.0, n)}.get(
                       field, lambda: rng.normal(0, 0.5, shapes[name]))()
    return p


def _pads(mode, k, padding, stride, dilation, size):
    if mode == "same":
        return geometry.same_pads(size[0], size[1], k, (stride,) * 2, (dilation,) * 2)
    return (0,) * 4 if mode == "valid" else tuple(padding) if isinstance(padding, tuple) else (padding,) * 4


FOLD_CASES = list(itertools.product((3, 5), ((1, "half"), (2, 0), (2, (1, 2, 0, 1)), (1, (3, 3, 3, 3))),
                                    ("1", "2", "dw"), (True, False), (1, 2)))


@pytest.mark.parametrize("case", FOLD_CASES, ids=lambda c: "-".join(map(str, c)))
def test_fold_dbb_equals_the_four_branches(case):
    """numpy only: the fold (fuse_bn, embed_center, avg_kernel, merge_sequential, identity_kernel, sum) equals
    the branches with BN-and-pad, for every stride, padding (asymmetric, below and above k // 2), dilation and
    groups, with and without branch BNs."""
    k, (stride, padding), groups, branch_bn, dilation = case
    cin, cout = (4, 4) if groups == "dw" else (4, 6)
    groups = cin if groups == "dw" else int(groups)
    pads = (dilation * (k // 2),) * 4 if padding == "half" else _pads("pad", k, padding, stride, dilation, None)
    rng = np.random.default_rng(sum(map(hash, map(str, case))) % 2 ** 32)
    p = _random_entries(rng, cin, cout, k, groups, branch_bn, has_bias=not branch_bn)
    x = rng.normal(size=(2, cin, 11, 12))
    info = dict(branch_bn=branch_bn, has_bias=not branch_bn, depthwise=groups == cin == cout, eps=1e-5)
    kernel, bias, consumed = KIND.fold({"b." + n: v for n, v in p.items()}, "b", info)
    assert sorted(consumed) == sorted("b." + n for n in p)
    got = conv(x, kernel, stride, pads, dilation, groups) + bias.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(got, dbb_reference(x, p, k, stride, pads, dilation, groups), rtol=1e-9, atol=1e-9)


def test_fold_dbb_without_bns_and_bias_has_no_bias():
    rng = np.random.default_rng(0)
    p = _random_entries(rng, 4, 6, 3, 2, branch_bn=False)
    kernel, bias = dbb_fold.fold_dbb((p["dbb_origin.conv.weight"], None), seq=(p["dbb_1x1_kxk.idconv1.weight"], None,
                                                                         p["dbb_1x1_kxk.conv2.weight"], None),
                                 groups=2)
    assert bias is None and kernel.shape == (6, 2, 3, 3)


# ------------------------------------------------------------------ the Cell

def _block_entries(block, prefix="blk"):
    name_params(block, prefix)
    return {p.name: p.asnumpy() for p in block.get_parameters()}


#: the Cell against the original's branches (every geometry against its fold: tests/test_kind_contract.py)
CELL_CASES = [(3, 1, "pad-half", "1"), (5, 2, "same", "2"), (3, 2, "valid", "dw"), (5, 1, "pad-0", "dw")]


def _cell_ids(case):
    return "k{}-s{}-{}-g{}".format(*case)


def _check_cell(k, stride, mode, groups, branch_bn=True, dilation=1, size=(9, 10), seed=0, has_bias=False):
    cin, cout = (4, 4) if groups == "dw" else (4, 6)
    groups = cin if groups == "dw" else int(groups)
    padding = k // 2 * dilation if mode == "pad-half" else 0 if mode == "pad-0" else mode
    pad_mode = mode if mode in ("same", "valid") else "pad"
    ms.set_seed(seed)
    block = DiverseBranchBlock(cin, cout, k, stride=stride, padding=padding if pad_mode == "pad" else None,
                               dilation=dilation, groups=groups, pad_mode=pad_mode, branch_bn=branch_bn,
                               has_bias=has_bias)
    randomize_block(block, seed)
    if has_bias:
        block.dbb_origin.conv.bias.set_data(Tensor(np.linspace(-1, 1, cout).astype(np.float32)))
    x_np = np.random.default_rng(seed + 1).normal(size=(2, cin) + size).astype(np.float32)
    x = Tensor(x_np)
    block.set_train(False)
    y = block(x).asnumpy()
    plain = nn.Conv2d(cin, cout, k, stride=stride, pad_mode=pad_mode, padding=padding if pad_mode == "pad" else 0,
                      dilation=dilation, group=groups)
    assert y.shape == plain(x).shape
    assert np.abs(y).max() > 0.1
    pads = _pads(pad_mode, k, padding, stride, dilation, size)
    # the numpy fold of its checkpoint entries, and the branches themselves, in float64
    state = _block_entries(block)
    kernel, bias, _ = KIND.fold(state, "blk", block.reparam_info())
    expected = conv(x_np.astype(np.float64), kernel.astype(np.float64), stride, pads, dilation, groups)
    if bias is not None:
        expected = expected + bias.reshape(1, -1, 1, 1)
    assert_close(y, expected, TOL, "eval vs kind.fold")
    local = {n[len("blk."):]: v.astype(np.float64) for n, v in state.items()}
    assert_close(y, dbb_reference(x_np.astype(np.float64), local, k, stride, pads, dilation, groups), TOL,
                 "eval vs the branches")
    # training mode: finite, and every parameter gets a gradient
    block.set_train(True)
    weights = block.trainable_params()
    grads = Grads(block, weights)(x)
    assert np.isfinite(block(x).asnumpy()).all()
    for w, g in zip(weights, grads):
        assert np.abs(g.asnumpy()).max() > 0, f"no gradient reaches {w.name}"
    # the folded conv
    block.set_train(False)
    y = block(x).asnumpy()  # the moving statistics moved in training mode
    switch_to_deploy(block)
    assert 1 <= len(list(block.get_parameters())) <= 2  # one conv
    assert_close(block(x).asnumpy(), y, TOL, "deploy vs eval")
    return block


@pytest.mark.parametrize("case", CELL_CASES, ids=_cell_ids)
def test_cell_equals_the_originals_branches(case):
    _check_cell(*case, seed=CELL_CASES.index(case))


@pytest.mark.parametrize("case", [(3, 2, "pad-0", "dw"), (5, 2, "same", "2")], ids=_cell_ids)
def test_dilated_cell_equals_its_fold(case):
    """Beyond the original: a dilated DBB averages over the dilated window (a fixed depthwise conv)."""
    _check_cell(*case, dilation=2, size=(12, 11), seed=7)


@pytest.mark.parametrize("case", [(3, 2, "pad-half", "1"), (5, 1, "same", "dw")], ids=_cell_ids)
def test_cell_without_branch_bns_equals_its_fold(case):
    block = _check_cell(*case, branch_bn=False, seed=3, has_bias=case[1] == 2)
    assert any(p.name.endswith(".bias") for p in block.get_parameters()) == (case[1] == 2)


def test_one_conv_form_has_the_branches_gradients():
    """branch_bn=False trains as ONE conv over the summed kernel: the outputs and gradients of the four
    branches computed one by one (BN-free: the pads are zeros)."""
    block = DiverseBranchBlock(4, 6, 3, stride=2, padding=0, groups=2, branch_bn=False)
    randomize_block(block, 3)
    b, seq = block, block.dbb_1x1_kxk

    class Branches(nn.Cell):
        def construct(self, x):
            w2 = b.dbb_1x1.conv.weight
            y = ops.conv2d(x, b.dbb_origin.conv.weight, stride=2, groups=2)
            y = y + ops.conv2d(x[:, :, 1:x.shape[2] - 1, 1:x.shape[3] - 1], w2, stride=2, groups=2)
            a = ops.conv2d(x, b.dbb_avg.conv.weight, groups=2)
            y = y + ops.avg_pool2d(a, 3, 2)
            first = seq.idconv1.weight + b.identity_kernel
            return y + ops.conv2d(ops.conv2d(x, first, groups=2), seq.conv2.weight, stride=2, groups=2)

    x = Tensor(np.random.default_rng(4).normal(size=(2, 4, 9, 10)).astype(np.float32))
    weights = block.trainable_params()
    assert len(weights) == 5
    assert_close(block(x).asnumpy(), Branches()(x).asnumpy(), TOL, "outputs")
    for w, g1, g2 in zip(weights, Grads(block, weights)(x), Grads(Branches(), weights)(x)):
        assert np.abs(g2.asnumpy()).max() > 0
        assert_close(g1.asnumpy(), g2.asnumpy(), TOL, w.name)


def test_bn_and_pad_pads_with_the_moving_statistics_value_without_gradient():
    """As the original: the border is beta - mean * gamma / sqrt(var + eps) of the MOVING statistics, also in
    training mode (where the inside uses the batch's), and no gradient flows through it."""
    bn = randomize_bn(nn.SequentialCell([PadBatchNorm(3, pads=(1, 2, 0, 1))]), seed=2).cell_list[0]
    x = Tensor(np.random.default_rng(0).normal(1.0, 2.0, size=(2, 3, 4, 5)).astype(np.float32))
    for training in (False, True):
        bn.set_train(training)
        y = bn(x).asnumpy()
        # (in training mode the statistics as this step's update left them, as the original reads them)
        value = identities.fuse_bn(np.zeros((3, 1)), *(getattr(bn, f).asnumpy() for f in identities.BN_FIELDS))[1]
        assert y.shape == (2, 3, 7, 6)
        for border in (y[:, :, :1], y[:, :, -2:], y[:, :, :, -1:]):
            np.testing.assert_allclose(border, np.broadcast_to(value.reshape(1, 3, 1, 1), border.shape), rtol=1e-5)

    class Border(nn.Cell):
        def construct(self, x):
            return bn(x)[:, :, 0].sum()

    grads = ops.GradOperation(get_by_list=True)(Border(), ms.ParameterTuple([bn.gamma, bn.beta]))(x)
    assert all(np.abs(g.asnumpy()).max() == 0 for g in grads)


def test_from_conv_starts_from_the_conv_and_bn():
    conv = nn.Conv2d(4, 6, 3, stride=2, pad_mode="pad", padding=1)
    bn = randomize_bn(nn.SequentialCell([nn.BatchNorm2d(6)]), 1).cell_list[0]
    block = DiverseBranchBlock.from_conv(conv, bn, gamma_init=0.0, seed=3)
    np.testing.assert_array_equal(block.dbb_origin.conv.weight.asnumpy(), conv.weight.asnumpy())
    for f in identities.BN_FIELDS:
        np.testing.assert_array_equal(getattr(block.dbb_origin.bn, f).asnumpy(), getattr(bn, f).asnumpy())
    for last in (block.dbb_1x1.bn, block.dbb_avg.avgbn, block.dbb_1x1_kxk.bn2):
        assert np.all(last.gamma.asnumpy() == 0)  # gamma_init 0: the original's single_init
    assert np.all(block.dbb_1x1_kxk.idconv1.weight.asnumpy() == 0)  # identity-initialised
    again = DiverseBranchBlock.from_conv(conv, bn, seed=3)
    np.testing.assert_array_equal(again.dbb_1x1_kxk.conv2.weight.asnumpy(), block.dbb_1x1_kxk.conv2.weight.asnumpy())
    # depthwise: no 1 x 1 branch, no 1 x 1 conv before the average, twice the internal channels
    dw = DiverseBranchBlock.from_conv(nn.Conv2d(4, 4, 3, group=4, pad_mode="same"))
    assert not hasattr(dw, "dbb_1x1") and not dw.dbb_avg.has_conv
    assert dw.dbb_1x1_kxk.conv1.weight.shape == (8, 1, 1, 1) and dw.dbb_1x1_kxk.conv2.weight.shape == (4, 2, 3, 3)


@pytest.mark.parametrize("bad, match", [(dict(kernel_size=4), "kernel_size"), (dict(kernel_size=1), "kernel_size"),
                                        (dict(groups=3), "groups"), (dict(padding=-1), "padding"),
                                        (dict(pad_mode="full"), "pad_mode"), (dict(has_bias=True), "has_bias"),
                                        (dict(internal_channels=5, groups=2), "internal_channels")])
def test_bad_arguments_fail_at_construction(bad, match):
    args = dict(kernel_size=3)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        DiverseBranchBlock(4, 4, **args)


# ------------------------------------------------------------------ the original's names

def _torch_names(cin, cout, k, groups):
    """The original PyTorch block's state dict (names and shapes; random values), as ``state_dict()`` gives it."""
    depthwise = groups >= cout
    internal = 2 * cin if depthwise else cin
    shapes = {"dbb_origin.conv.weight": (cout, cin // groups, k, k)}

    def bn(name, n):
        shapes.update({f"{name}.weight": (n,), f"{name}.bias": (n,), f"{name}.running_mean": (n,),
                       f"{name}.running_var": (n,), f"{name}.num_batches_tracked": ()})

    bn("dbb_origin.bn", cout)
    if not depthwise:
        shapes["dbb_avg.conv.weight"] = (cout, cin // groups, 1, 1)
        bn("dbb_avg.bn.bn", cout)
    bn("dbb_avg.avgbn", cout)
    if not depthwise:
        shapes["dbb_1x1.conv.weight"] = (cout, cin // groups, 1, 1)
        bn("dbb_1x1.bn", cout)
    first = "idconv1" if internal == cin else "conv1"
    shapes[f"dbb_1x1_kxk.{first}.weight"] = (internal, cin // groups, 1, 1)
    bn("dbb_1x1_kxk.bn1.bn", internal)
    shapes["dbb_1x1_kxk.conv2.weight"] = (cout, internal // groups, k, k)
    bn("dbb_1x1_kxk.bn2", cout)
    rng = np.random.default_rng(cin + cout + groups)
    return {n: (rng.uniform(0.5, 1.5, s) if n.endswith(("running_var", ".bn.weight", "bn2.weight"))
                else np.array(5, np.int64) if n.endswith("num_batches_tracked")
                else rng.normal(0, 0.5, s)).astype(np.float32 if s else np.int64) for n, s in shapes.items()}


@pytest.mark.parametrize("cin, cout, groups", [(4, 6, 1), (4, 4, 2), (4, 4, 4)], ids=["dense", "grouped", "dw"])
def test_a_state_dict_of_the_original_loads_by_name(cin, cout, groups):
    """A state dict of the original PyTorch block, BN fields renamed (num_batches_tracked dropped), loads
    into the Cell by name, strictly, and computes what the original computes."""
    torch_state = _torch_names(cin, cout, 3, groups)
    state = rename_torch_state(torch_state)
    assert "dbb_avg.avgbn.moving_variance" in state and not any("num_batches" in n for n in state)
    if groups == 1:
        assert "dbb_avg.bn.bn.gamma" in state and "dbb_1x1_kxk.bn1.bn.moving_mean" in state
    block = DiverseBranchBlock(cin, cout, 3, padding=1, groups=groups)
    name_params(block, "")
    params = {n: Parameter(Tensor(v), name=n) for n, v in state.items()}
    assert ms.load_param_into_net(block, params, strict_load=True) == ([], [])
    block.set_train(False)
    x = np.random.default_rng(1).normal(size=(2, cin, 8, 8))
    expected = dbb_reference(x, {n: v.astype(np.float64) for n, v in state.items()}, 3, 1, (1,) * 4, 1, groups)
    assert_close(block(Tensor(x.astype(np.float32))).asnumpy(), expected, TOL, "original's state dict")


# ------------------------------------------------------------------ the kind

class Sites(nn.Cell):
    """Every kind of site: conv + BN, a conv with bias and no BN, a bias-free conv into the output, a dilated
    depthwise conv + BN, a 1 x 3 conv and a 4 x 4 conv."""

    def __init__(self):
        super().__init__()
        self.a, self.bn_a = nn.Conv2d(3, 4, 3, stride=2, pad_mode="pad", padding=0), nn.BatchNorm2d(4)
        self.b = nn.Conv2d(4, 4, 3, pad_mode="same", has_bias=True)
        self.c, self.bn_c = nn.Conv2d(4, 4, 3, pad_mode="pad", padding=2, dilation=2, group=4), nn.BatchNorm2d(4)
        self.d = nn.Conv2d(4, 4, (1, 3), pad_mode="same")
        self.e = nn.Conv2d(4, 4, 4, pad_mode="same")
        self.f = nn.Conv2d(4, 6, 5, stride=2, pad_mode="pad", padding=1)
        self.relu = nn.ReLU()

    def construct(self, x):
        y = self.relu(self.bn_a(self.a(x)))
        y = self.relu(self.b(y))
        y = self.relu(self.bn_c(self.c(y)))
        return self.f(self.e(self.d(y)))


@pytest.mark.parametrize("options", [{}, {"branch_bn": False}], ids=["bn", "nobn"])
def test_every_site_folds_into_the_plain_network(options):
    from acnet_ms.reparam.state import fold_state
    from acnet_ms.reparam.transform import block_layout, block_summary, summary_line, to_blocks, trace

    ms.set_seed(0)
    plain = randomize_bn(Sites(), 1)
    net = randomize_bn(Sites(), 1)
    net.set_train(False)
    to_blocks(net, trace(net, (1, 3, 15, 15)), "dbb", options)
    summary = block_summary(net)
    assert summary["plain"] == {"d": "non-square kernel 1x3",
                                "e": "kernel 4x4 (DBB needs an odd k: its 1 x 1 branch sits at the window's centre)"}
    words = {"BN slot": 2, "conv bias": 1, "no BN (bias-free)": 1} if not options else \
        {"no BN (bias-free)": 3, "conv bias": 1}
    assert summary["kinds"] == words
    assert summary_line(net).startswith("4 k x k convs became DBBs")
    layout = block_layout(net)
    assert layout["a"]["slot"] == ("bn" if not options else "none") and layout["f"]["branch_bn"] is False
    randomize_bn(net, 2)
    for name, param in net.parameters_and_names():
        if "idconv1" in name:
            param.set_data(Tensor(np.random.default_rng(3).normal(0, 0.3, param.shape).astype(np.float32)))
    x = Tensor(np.random.default_rng(4).normal(size=(2, 3, 15, 15)).astype(np.float32))
    net.set_train(False)
    expected = net(x).asnumpy()
    folded, blocks = fold_state({p.name: p.asnumpy() for p in net.get_parameters()}, layout)
    assert sorted(blocks) == ["a", "b", "c", "f"]
    assert ms.load_param_into_net(plain, {k: Parameter(Tensor(v), name=k) for k, v in folded.items()},
                                  strict_load=True) == ([], [])
    plain.set_train(False)
    assert_close(plain(x).asnumpy(), expected, 1e-4, f"folded {options}")


def test_defaults_and_the_mac_count():
    assert check_block("dbb", None) == ("dbb", {"branch_bn": True, "gamma_init": None})
    macs = KIND.macs(64, 64, 3, stride=1, height=56)
    assert macs["plain"] == 576 * 64 * 56 * 56 and macs["block"] == 1353 * 64 * 56 * 56
    assert macs["ratio"] == pytest.approx(2.349, abs=1e-3)
    assert KIND.macs(32, 32, 3, groups=32)["ratio"] == pytest.approx((9 + 9 + 2 + 18) / 9)
    assert 1 < KIND.macs(64, 64, 3, {"branch_bn": False}, batch=32)["ratio"] < 1.001


def test_from_plain_adds_zero_in_training_mode_too():
    """from_plain: dbb_origin takes the conv + BN, every other branch's last BN gamma = beta = 0 (its first
    BN's pad value is multiplied by that zero too): in training mode as well the block is dbb_origin."""
    conv = nn.Conv2d(4, 4, 3, stride=2, pad_mode="same", group=4)
    bn = randomize_bn(nn.SequentialCell([nn.BatchNorm2d(4)]), 1).cell_list[0]
    block = randomize_block(DiverseBranchBlock.from_conv(conv, bn, seed=3), 4)
    assert block.depthwise
    mine = _block_entries(block, "blk")
    plain = {"blk.weight": conv.weight.asnumpy(), **{f"bn.{f}": getattr(bn, f).asnumpy() for f in identities.BN_FIELDS}}
    mine.update(KIND.from_plain(plain, "blk", dict(block.reparam_info(), slot="bn", bn="bn")))
    assert ms.load_param_into_net(block, {n: Parameter(Tensor(v), name=n) for n, v in mine.items()},
                                  strict_load=True) == ([], [])
    block.set_train(True)
    x = Tensor(np.random.default_rng(7).normal(size=(2, 4, 8, 8)).astype(np.float32))
    origin = block.dbb_origin(x).asnumpy()
    assert_close(block(x).asnumpy(), origin, 1e-6, "training mode: the added branches give zero")


def test_gamma_init_sets_every_branch_and_the_bns_keep_the_models_momentum():
    conv = nn.Conv2d(4, 6, 3, pad_mode="pad", padding=1)
    bn = randomize_bn(nn.SequentialCell([nn.BatchNorm2d(6, momentum=0.97)]), 1).cell_list[0]
    block = DiverseBranchBlock.from_conv(conv, bn, gamma_init=0.25, seed=3)
    lasts = (block.dbb_origin.bn, block.dbb_1x1.bn, block.dbb_avg.avgbn, block.dbb_1x1_kxk.bn2)
    assert all(np.all(last.gamma.asnumpy() == np.float32(0.25)) for last in lasts)
    np.testing.assert_array_equal(block.dbb_origin.bn.moving_mean.asnumpy(), bn.moving_mean.asnumpy())
    norms = [c for _, c in block.cells_and_names() if isinstance(c, nn.BatchNorm2d)]
    assert len(norms) >= 6 and all(abs(n.momentum - bn.momentum) < 1e-7 for n in norms)


@pytest.mark.parametrize("part", SAMPLE_PARTS)
def test_the_sample_sweep_trains_converts_and_strict_loads_each_site_type(part, tmp_path):
    """A MindCV model per site type (BN-free, grouped, depthwise, dilated, a deep ResNet) through the zoo sweep's
    stages with dbb blocks: a train step under the recipe's AMP level in PyNative (and graph mode for the cheap
    ones), conversion, strict load, the folded function; ``ci``: the BN-free model in PyNative, ``zoo``: the rest
    (``make test-all``)."""
    assert_sample_sweep("dbb", tmp_path, part)


def _mixed_types_merge(first, second, groups):
    """A stand-in for DBB's 1x1-kxk merge that adds a float16 and a float32 tensor (graph mode compiles it)."""
    return ops.addn([first.astype(ms.float16), first])


@pytest.mark.parametrize("mode", ["pynative", pytest.param("graph", marks=pytest.mark.graph)])
def test_a_failing_train_step_names_the_kind_the_mode_and_the_op(mode, monkeypatch):
    """A train step that fails inside a kind's code (a float16 and a float32 operand, as PyNative's mixed precision
    once made of DBB's kernel): one line naming the model, the kind, the AMP level, the mode, MindSpore's op and the
    kind's file and line; not the device, which is not the cause."""
    import re

    from acnet_ms.cli import UserError
    from acnet_ms.config.loader import defaults
    from acnet_ms.kinds.dbb import cell as dbb_cell
    from acnet_ms.training.factories import build_train_step
    from acnet_ms.training.loop import train_call
    from test_kind_contract import sites_net

    monkeypatch.setattr(dbb_cell, "merge_1x1_kxk", _mixed_types_merge)
    net = sites_net("dbb", {"branch_bn": False})
    cfg = dict(defaults(), device_target="CPU", model="sites", block_type="dbb", opt="momentum", amp_level="O0",
               mode=0 if mode == "graph" else 1)
    step, _ = build_train_step(net, cfg, [0.05] * 4)
    x, y = Tensor(np.zeros((2, 3, 16, 16), np.float32)), Tensor(np.zeros(2, np.int32))
    with pytest.raises(UserError) as err:
        train_call(step, x, y, True, cfg)
    text = str(err.value)
    mode_name = "graph mode" if mode == "graph" else "PyNative mode"
    assert re.fullmatch(rf"the train step of sites \(block_type dbb, amp_level O0, opt momentum, {mode_name}\) fails in "
                        r"MindSpore's AddN, called from the dbb blocks' code \(acnet_ms/kinds/dbb/cell\.py:\d+"
                        r"(, conv_kernel)?\): For primitive\[AddN\], the input type must be same\.", text), text
    assert "CPU" not in text
