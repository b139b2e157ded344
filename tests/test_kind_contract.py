"""What every block kind promises, checked on every registered kind.

The kinds the package ships and one defined outside it (``twin``, tests/kinds_twin.py) run the same suite:
a kind that registers passes it unchanged or shows where it breaks a promise.  Blocks are built the way models
build them, through the kind (``eligible``, ``slot``, ``build``), and read through what every block has
(``reparam_info``, ``switch_to_deploy``) and the kind's numpy side (``entries``, ``fold``, ``from_plain``,
``infer_options``), never through a Cell's own attributes.

* geometry: every pair of kernel size, stride, padding (k // 2, 0, above k // 2, 'same', 'valid'), groups
  (1, 2, depthwise), dilation, site (conv + BN, conv with bias, bare conv) and option set (:func:`all_pairs`);
  for each, in training every parameter gets a gradient, and in eval the block equals its switched conv and the
  stock conv loaded with the numpy fold of its entries, with random BN statistics; the numpy fold and the
  entries agree with the Cell on the full grid;
* ``from_plain`` keeps the plain conv's function, for each site and option set;
* ``infer_options`` gives back the options a model was built with (those it can see);
* two train steps at each AMP level, in GRAPH mode and in PyNative, after which the fold of the float32 weights
  is the model;
* MindCV families (plain, depthwise, grouped, pre-activation, biased): convert, strict load into the stock
  model, logits within 1e-4; a stock checkpoint starts the kind's model at the stock function;
* bad options: one line naming the option.
"""
import itertools

import mindcv
import numpy as np
import pytest
from helpers import (SiteNet, Grads, arrays_of, assert_close, assert_one_line_error, bn_cells, images, load_strict,
                     randomize_block, randomize_bn, run_main)

import kinds_twin  # noqa: F401  (registers the twin kind)
import mindspore as ms
from mindspore import Tensor, nn, ops

from acnet_ms.kinds import check_block, geometry, get_kind, kind_names
from acnet_ms.reparam.state import fold_state, infer_block
from acnet_ms.kinds.cell import name_params
from acnet_ms.reparam.switch import reparam_blocks, switch_to_deploy
from acnet_ms.reparam.transform import ConvSite, block_layout, to_blocks, trace

KINDS = kind_names()
TOL = 2e-5        # float32, one block, relative to the output's scale
MODEL_TOL = 1e-4  # float32 through a whole network, relative to the largest logit


# ------------------------------------------------------------------ all pairs

def all_pairs(factors):
    """A few cases (dicts) in which every two levels of every two factors meet at least once.

    ``factors``: ``{name: [level, ...]}``.  Greedy: each case starts from the first pair not yet covered and
    fills the other factors with the level that covers the most uncovered pairs; deterministic.
    """
    names = list(factors)
    levels = [list(factors[n]) for n in names]
    todo = {(i, a, j, b) for i, j in itertools.combinations(range(len(names)), 2)
            for a in range(len(levels[i])) for b in range(len(levels[j]))}
    cases = []
    while todo:
        i, a, j, b = min(todo)
        case = {i: a, j: b}
        for f in range(len(names)):
            if f not in case:
                case[f] = max(range(len(levels[f])), key=lambda v: sum(
                    (min(f, g), v if f < g else w, max(f, g), w if f < g else v) in todo for g, w in case.items()))
        todo -= {(f, case[f], g, case[g]) for f, g in itertools.combinations(range(len(names)), 2)}
        cases.append({names[f]: levels[f][case[f]] for f in range(len(names))})
    return cases


def test_all_pairs_covers_every_pair_in_few_cases():
    factors = dict(k=(3, 5), s=(1, 2), p=("half", 0, "above", "same", "valid"), g=("1", "2", "dw"), d=(1, 2))
    cases = all_pairs(factors)
    for (f, fl), (g, gl) in itertools.combinations(factors.items(), 2):
        for a, b in itertools.product(fl, gl):
            assert any(c[f] == a and c[g] == b for c in cases), (f, a, g, b)
    assert len(cases) <= 20 < len(list(itertools.product(*factors.values())))


# ------------------------------------------------------------------ building one block through its kind

SITES = ("bn", "bias", "bare")  # conv + BN, conv with its own bias, bias-free conv with nothing after it


def option_sets(name):
    """The kind's defaults, and one option set per non-default choice of each option that lists its choices
    (``{}`` is the defaults), and each value an option gives as an example (``KindOption.examples``)."""
    kind = get_kind(name)
    sets = [{}]
    for option, spec in kind.options.items():
        sets += [{option: v} for v in tuple(spec.choices or ()) + tuple(spec.examples) if v != spec.default]
    return sets


def takes(name, site, options=None):
    """Whether the kind takes a 3 x 3 conv at ``site`` (True) or the reason it leaves it plain."""
    kind = get_kind(name)
    return kind.eligible(_site(site, 3), check_block(name, options)[1])


def _site(site, k):
    return ConvSite((k, k), site == "bias", "blk", calls=1, bn="bn" if site == "bn" else None,
                    bn_prefix="bn" if site == "bn" else None, consumers=["bn"] if site == "bn" else [],
                    feeds_bn=site == "bn")


def plain_site(site, cin, cout, k, stride=1, padding="half", groups=1, dilation=1, seed=0):
    """A plain conv (and the BN after it, for site "bn") of the given geometry, with random values."""
    pad_mode = padding if padding in ("same", "valid") else "pad"
    pad = {"half": k // 2 * dilation, "above": k // 2 * dilation + 1}.get(padding, 0)
    ms.set_seed(seed)
    conv = nn.Conv2d(cin, cout, k, stride=stride, pad_mode=pad_mode, padding=pad, dilation=dilation, group=groups,
                     has_bias=site == "bias")
    rng = np.random.default_rng(seed)
    conv.weight.set_data(Tensor(rng.normal(0, 0.5, conv.weight.shape).astype(np.float32)))
    if site == "bias":
        conv.bias.set_data(Tensor(rng.normal(0, 0.5, cout).astype(np.float32)))
    bn = randomize_bn(nn.SequentialCell([nn.BatchNorm2d(cout)]), seed).cell_list[0] if site == "bn" else None
    return conv, bn


def build(name, conv, bn, options=None, seed=0):
    """``(block, layout info)``: the kind's block for the site ``conv`` (+ ``bn``), parameters named ``blk.*``
    (its BN slot, if it takes it, is ``bn.*``), as a model builds it."""
    kind = get_kind(name)
    options = check_block(name, options)[1]
    site = _site("bn" if bn is not None else "bias" if conv.has_bias else "bare", conv.kernel_size[0])
    assert kind.eligible(site, options) is True
    slot = kind.slot(site, options)
    block = kind.build(conv, bn if slot == "bn" or kind.sees_bn_after else None, slot, options, seed)
    name_params(block, "blk")
    return block, dict(block.reparam_info(), slot=slot, bn="bn" if slot == "bn" else None)


def folded_conv(conv, kernel, bias):
    """The plain ``conv``'s geometry with the folded kernel and bias: what a stock model computes after
    loading a converted checkpoint."""
    plain = geometry.conv_like(conv, has_bias=bias is not None)
    plain.weight.set_data(Tensor(kernel.astype(np.float32)))
    if bias is not None:
        plain.bias.set_data(Tensor(bias.astype(np.float32)))
    plain.set_train(False)
    return plain


# ------------------------------------------------------------------ geometry, fold, gradients, from_plain

GEOMETRY = dict(k=(3, 5), stride=(1, 2), padding=("half", 0, "above", "same", "valid"), groups=("1", "2", "dw"),
                dilation=(1, 2))


def contract_cases(geometry=GEOMETRY):
    cases = []
    for name in KINDS:
        sites = [s for s in SITES if takes(name, s) is True]
        full = dict(GEOMETRY, **geometry)
        for case in all_pairs(dict(geometry, site=sites, options=range(len(option_sets(name))))):
            case = dict({k: v[0] for k, v in full.items()}, **case)
            ident = "-".join(f"{k[0]}{v}" for k, v in case.items() if k not in ("site", "options"))
            cases.append(pytest.param(name, case, id=f"{name}-{ident}-{case['site']}-o{case['options']}"))
    return cases


def _channels(groups):
    return (4, 4, 4) if groups == "dw" else (4, 6, int(groups)) if groups == "2" else (4, 4, 1)


@pytest.mark.parametrize("name, case", contract_cases())
def test_the_block_trains_and_equals_its_switched_conv_and_its_numpy_fold(name, case):
    """Training mode: every parameter gets a gradient.  Eval mode, random BN statistics: block == its switched
    conv == the stock conv loaded with ``kind.fold`` of the block's entries; the fold reads exactly the
    entries ``kind.entries`` names, which are the block's parameters."""
    cin, cout, groups = _channels(case["groups"])
    options = option_sets(name)[case["options"]]
    seed = len(str(case)) + case["k"] * 10 + case["stride"]
    conv, bn = plain_site(case["site"], cin, cout, case["k"], case["stride"], case["padding"], groups,
                          case["dilation"], seed)
    block, info = build(name, conv, bn, options, seed)
    randomize_block(block, seed)
    x = Tensor(np.random.default_rng(seed).normal(1.0, 1.0, size=(2, cin, 11, 12)).astype(np.float32))

    block.set_train(True)
    weights = block.trainable_params()
    norms = bn_cells(block)
    before = [n.moving_mean.asnumpy().copy() for n in norms]
    for w, g in zip(weights, Grads(block, weights)(x)):
        g = g.asnumpy()
        assert np.isfinite(g).all() and np.abs(g).max() > 0, f"no gradient reaches {w.name}"
    for norm, mean in zip(norms, before):  # each BN normalises with the batch's statistics and keeps them
        assert not np.allclose(norm.moving_mean.asnumpy(), mean), f"{norm.gamma.name}: statistics did not move"
    name_params(block, "blk")  # (a Cell holding the block prefixed its parameters' names)

    block.set_train(False)
    y = block(x).asnumpy()
    assert y.shape == conv(x).shape and np.abs(y).max() > 0.1
    kind = get_kind(name)
    state = arrays_of(block)
    assert sorted(kind.entries("blk", info)) == sorted(state)
    kernel, bias, consumed = kind.fold(state, "blk", info)
    assert sorted(consumed) == sorted(state)
    assert kernel.shape == conv.weight.shape and kernel.dtype == np.float32
    assert_close(folded_conv(conv, kernel, bias)(x).asnumpy(), y, TOL, "numpy fold")
    switch_to_deploy(block)
    deployed = list(block.get_parameters())
    assert 1 <= len(deployed) <= 2 and all(p.name.startswith("blk.") for p in deployed)  # one conv (+ bias)
    assert_close(block(x).asnumpy(), y, TOL, "switched")


@pytest.mark.parametrize("name, case", contract_cases(dict(k=(3, 5), groups=("1", "2", "dw"))))
def test_from_plain_keeps_the_plain_convs_function(name, case):
    """A plain conv's entries (with its BN's, or its bias) mapped by ``from_plain`` over a block's own random
    entries: the block computes the plain conv (+ BN) in eval mode."""
    cin, cout, groups = _channels(case["groups"])
    options = option_sets(name)[case["options"]]
    seed = len(str(case)) + case["k"]
    conv, bn = plain_site(case["site"], cin, cout, case["k"], case["stride"], case["padding"], groups,
                          case["dilation"], seed)
    x = Tensor(np.random.default_rng(seed).normal(size=(2, cin, 11, 12)).astype(np.float32))
    plain = {"blk.weight": conv.weight.asnumpy()}
    if conv.has_bias:
        plain["blk.bias"] = conv.bias.asnumpy()
    if bn is not None:
        plain.update({f"bn.{f}": getattr(bn, f).asnumpy() for f in ("gamma", "beta", "moving_mean",
                                                                      "moving_variance")})
        bn.set_train(False)
    block, info = build(name, conv, bn, options, seed + 1)
    # what the block stands for: the conv, and the BN after it when the block takes the BN's place
    expected = (bn(conv(x)) if info["slot"] == "bn" else conv(x)).asnumpy()
    randomize_block(block, seed + 2)
    mine = arrays_of(block)
    mapped = get_kind(name).from_plain(plain, "blk", info)
    assert not {"blk.weight", "blk.bias"} & set(mapped)
    if info["slot"] == "bn":
        assert "bn.gamma" not in mapped  # the BN slot's entries moved into the block
    mine.update({k: v for k, v in mapped.items() if not k.startswith("bn.")})
    load_strict(block, mine)
    assert_close(block(x).asnumpy(), expected, 1e-5, "from_plain")


def test_every_site_is_taken_or_left_plain_with_a_reason():
    for name in KINDS:
        for site in SITES:
            verdict = takes(name, site)
            assert verdict is True or (isinstance(verdict, str) and verdict and "\n" not in verdict), (name, site)
        assert takes(name, "bn") is True, name  # conv + BN, the most common site, is every kind's


@pytest.mark.slow
@pytest.mark.parametrize("name", KINDS)
def test_the_numpy_fold_and_entries_agree_with_the_cell_on_the_full_grid(name):
    """Every geometry at a conv + BN site, and every option set at every site (no forward pass: the Cell's
    parameters, the entries, the fold's shapes)."""
    kind = get_kind(name)
    sites = [s for s in SITES if takes(name, s) is True]
    cases = [(geometry, {}, "bn") for geometry in itertools.product(*GEOMETRY.values())]
    cases += [((3, 2, 0, "2", 1), options, site) for options, site in itertools.product(option_sets(name), sites)]
    for (k, stride, padding, groups, dilation), options, site in cases:
        if True:
            cin, cout, g = _channels(groups)
            conv, bn = plain_site(site, cin, cout, k, stride, padding, g, dilation)
            block, info = build(name, conv, bn, options)
            state = arrays_of(block)
            assert sorted(kind.entries("blk", info)) == sorted(state), (k, stride, padding, groups, options)
            kernel, bias, consumed = kind.fold(state, "blk", info)
            assert sorted(consumed) == sorted(state)
            assert kernel.shape == (cout, cin // g, k, k)
            assert bias is None or bias.shape == (cout,)
            if info["slot"] == "bn":
                assert bias is not None


# ------------------------------------------------------------------ models: options, AMP, families

def Sites():
    """One conv of each site (helpers.SiteNet): into a BN, with its own bias (stride 2), a 1 x 1 into a BN, bare
    (pre-activation)."""
    return SiteNet()


def sites_net(name, options=None, seed=0):
    ms.set_seed(seed)
    net = Sites()
    return to_blocks(net, trace(net, (1, 3, 16, 16)), name, options)


def option_cases():
    return [pytest.param(n, o, id=f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'defaults'}")
            for n in KINDS for o in option_sets(n)]


@pytest.mark.parametrize("name, options", option_cases())
def test_infer_options_gives_back_the_options_it_can_see(name, options):
    """A checkpoint that records nothing: its entries show the kind and every option they can show, with
    the value the model was built with; the others are named as unseen."""
    net = sites_net(name, options)
    built = net.acnet.block_options
    assert built == check_block(name, options)[1]
    found, shown, unseen = infer_block(arrays_of(net))
    assert found == name
    assert set(shown) <= set(built) and set(unseen) <= set(built) and not set(shown) & set(unseen)
    assert shown == {k: built[k] for k in shown}
    assert check_block(name, shown)[0] == name  # what it shows is a valid option set


def train_step(net, amp_level, name):
    from acnet_ms.config.loader import defaults
    from acnet_ms.training.factories import build_train_step
    from acnet_ms.training.loop import train_call

    cfg = dict(defaults(), device_target="CPU", model="sites", block_type=name, opt="momentum", amp_level=amp_level,
               weight_decay=1e-4, lr=0.05)
    step, _ = build_train_step(net, cfg, [0.05] * 4)
    rng = np.random.default_rng(0)
    x = Tensor(rng.normal(size=(2, 3, 16, 16)).astype(np.float32))
    y = Tensor(rng.integers(0, 10, 2).astype(np.int32))
    # two steps: a backward that stalled the graph from the second step on (ops.pad's, in DBB's BN-free form)
    # would hang here
    losses = [float(train_call(step, x, y, True, cfg)[0].asnumpy()) for _ in range(2)]
    return losses[-1]


def amp_cases():
    """Every kind at every AMP level in both modes, and its one-conv form (no branch BNs) where it has one.  The
    fast lane: O2 and O3 in PyNative (where MindSpore casts each op's inputs, and where dbb, orepa and rep once
    failed), O2 in graph mode; the rest is slow."""
    cases = []
    for name in KINDS:
        forms = [({}, "")] + ([({"branch_bn": False}, "-one_conv")] if "branch_bn" in get_kind(name).options else [])
        for (options, tag), level, mode in itertools.product(forms, ("O0", "O1", "O2", "O3"), ("pynative", "graph")):
            fast = (mode == "pynative" and level in ("O2", "O3")) or (mode == "graph" and level == "O2" and not tag)
            marks = ([pytest.mark.graph] if mode == "graph" else []) + ([] if fast else [pytest.mark.slow])
            cases.append(pytest.param(name, level, options, id=f"{name}-{level}{tag}-{mode}", marks=marks))
    return cases


@pytest.mark.parametrize("name, amp_level, options", amp_cases())
def test_train_steps_at_each_amp_level_in_both_modes_then_the_fold_is_the_model(name, amp_level, options):
    """The block trains (two steps) at the AMP level, in GRAPH mode (compiled) and in PyNative (each op cast on its
    own), on every site SiteNet has (into a BN, biased, bare: BN-free); O2/O3 cast the input to float16, the
    parameters stay float32; eval at that level is close to float32, and the fold of the weights is exact."""
    net = randomize_bn(sites_net(name, options), seed=2)
    assert np.isfinite(train_step(net, amp_level, name))
    x = Tensor(np.random.default_rng(4).normal(size=(2, 3, 16, 16)).astype(np.float32))
    net.set_train(False)
    amp_out = net(x).asnumpy().astype(np.float32)
    assert np.isfinite(amp_out).all()

    ms.set_context(mode=ms.PYNATIVE_MODE)
    params = {p.name: p.asnumpy() for p in net.get_parameters()}
    assert all(v.dtype == np.float32 for v in params.values())
    reference = sites_net(name, options)
    load_strict(reference, params)
    folded, _ = fold_state(params, block_layout(reference))
    plain = load_strict(Sites(), folded)
    expected = reference(x).asnumpy()
    assert_close(plain(x).asnumpy(), expected, MODEL_TOL, f"fold after {amp_level}")
    assert_close(amp_out, expected, 0.05 if amp_level != "O0" else 1e-5, f"{amp_level} vs float32")


class SameNet(nn.Cell):
    """EfficientNet's sites: 'same'-padded convs into BNs, at stride 1 and (depthwise) at stride 2 on an even size,
    where 'same' pads the bottom and right only; a block's branch form pads them explicitly."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 8, 3, pad_mode="same"), nn.BatchNorm2d(8)
        self.dw, self.bn1 = nn.Conv2d(8, 8, 3, stride=2, pad_mode="same", group=8), nn.BatchNorm2d(8)
        self.head = nn.Dense(8, 10)

    def construct(self, x):
        x = ops.relu(self.bn1(self.dw(ops.relu(self.bn0(self.stem(x))))))
        return self.head(x.mean(axis=(2, 3)))


@pytest.mark.parametrize("name", KINDS)
@pytest.mark.parametrize("mode", ["pynative", pytest.param("graph", marks=[pytest.mark.graph, pytest.mark.slow])])
def test_same_padded_sites_train_under_amp_and_fold(name, mode):
    """A train step at O2 on 'same'-padded sites in their branch form (in PyNative, zeros concatenated to a
    float16 input once gave the next conv a null device pointer: every kind but OREPA on EfficientNet), then
    the fold of the trained weights is the model."""
    ms.set_context(mode=ms.PYNATIVE_MODE if mode == "pynative" else ms.GRAPH_MODE)
    try:
        ms.set_seed(0)
        net = randomize_bn(SameNet(), seed=3)
        to_blocks(net, trace(net, (1, 3, 16, 16)), name, {})
        assert len(block_layout(net)) == 2
        assert np.isfinite(train_step(net, "O2", name))
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    params = {p.name: p.asnumpy() for p in net.get_parameters()}
    reference = SameNet()  # float32, holding the trained weights (the trained net runs at O2)
    load_strict(to_blocks(reference, trace(reference, (1, 3, 16, 16)), name, {}), params)
    folded, _ = fold_state(params, block_layout(reference))
    plain = load_strict(SameNet(), folded)
    x = Tensor(np.random.default_rng(5).normal(size=(2, 3, 16, 16)).astype(np.float32))
    reference.set_train(False)
    plain.set_train(False)
    assert_close(plain(x).asnumpy(), reference(x).asnumpy(), MODEL_TOL, f"{name}: fold after O2 on 'same' sites")


#: one small member per kind of MindCV site: plain conv + BN, depthwise + pointwise, grouped, pre-activation
#: (convs into a concat, no BN after them), convs with a bias and no BN
FAMILIES = {"plain": "resnet18", "depthwise": "mobilenet_v2_035_96", "grouped": "regnet_x_200mf",
            "pre-activation": "densenet121", "biased": "squeezenet1_1"}
FAST_FAMILIES = ("depthwise",)  # the smallest model: the fast lane's check of every kind

_MODELS = {}


def kind_model(name, family):
    """The kind's model of the family with random values (damped: see randomize_block), built once a
    session; None when the kind takes none of its convs (the reason: :func:`_no_model`)."""
    from acnet_ms import create_model

    key = (name, family)
    if key not in _MODELS:
        ms.set_seed(1)
        try:
            net = create_model(FAMILIES[family], num_classes=10, block_type=name)
        except ValueError as err:
            _MODELS[key] = str(err)
            return None
        randomize_bn(net, seed=2)
        for i, (_, block) in enumerate(reparam_blocks(net)):
            randomize_block(block, seed=i, damp=True)
        net.set_train(False)
        _MODELS[key] = net
    net = _MODELS[key]
    return None if isinstance(net, str) else net


def _no_model(name, family):
    if kind_model(name, family) is None:
        pytest.skip(f"{name} takes no conv of {FAMILIES[family]}: {_MODELS[(name, family)]}")


@pytest.fixture(scope="session")
def stock_logits_of():
    """The stock MindCV model of a family loaded with a converted checkpoint: its logits (models built once)."""
    stock = {}

    def logits(model, arrays, x):
        if model not in stock:
            stock[model] = mindcv.create_model(model, num_classes=10)
        assert list(arrays) == [p.name for p in stock[model].get_parameters()]  # names and order
        return load_strict(stock[model], arrays)(x).asnumpy()

    return logits


def family_cases():
    return [pytest.param(n, f, id=f"{n}-{f}", marks=() if f in FAST_FAMILIES else pytest.mark.slow)
            for n in KINDS for f in FAMILIES]


@pytest.mark.parametrize("name, family", family_cases())
def test_a_mindcv_model_converts_to_the_stock_checkpoint(name, family, stock_logits_of, tmp_path):
    from acnet_ms import block_summary
    from acnet_ms.convert.pipeline import convert_checkpoint
    from acnet_ms.io.checkpoint import read_checkpoint, write_checkpoint

    _no_model(name, family)
    net = kind_model(name, family)
    report = block_summary(net)
    assert report["block_type"] == name and report["blocks"] == len(reparam_blocks(net)) > 0
    src, dst = str(tmp_path / "blocks.ckpt"), str(tmp_path / "plain.ckpt")
    arrays = arrays_of(net)
    arrays.update({"moments." + k: np.full_like(v, 0.5) for k, v in list(arrays.items())})  # an optimizer's slots
    write_checkpoint(src, arrays, dict(model=FAMILIES[family], block_type=name, block_options=net.acnet.block_options,
                                       num_classes=10))
    lines = []
    summary = convert_checkpoint(src, dst, log=lines.append)
    assert summary["blocks"] == report["blocks"]
    x = images(0)
    expected = net(x).asnumpy()
    assert np.abs(expected).max() > 0
    assert_close(stock_logits_of(FAMILIES[family], read_checkpoint(dst)[0], x), expected, MODEL_TOL, family)


@pytest.mark.parametrize("name", KINDS)
def test_a_checkpoint_that_records_nothing_converts_given_the_model(name, stock_logits_of, tmp_path):
    """Saved by MindSpore in a loop of one's own: the converter finds the kind and its options in the entries,
    says which options it assumed (those the entries cannot show), and gives the model's function."""
    from acnet_ms.convert.pipeline import convert_checkpoint
    from acnet_ms.io.checkpoint import read_checkpoint

    net = kind_model(name, "plain")
    src, dst = str(tmp_path / "own.ckpt"), str(tmp_path / "plain.ckpt")
    ms.save_checkpoint(net, src)
    arrays, meta = read_checkpoint(src)
    assert not meta.get("block_type")
    _, _, unseen = infer_block(arrays)
    lines = []
    convert_checkpoint(src, dst, model="resnet18", log=lines.append)
    assert any("assumed" in line for line in lines) == bool(unseen), lines
    x = images(1)
    assert_close(stock_logits_of("resnet18", read_checkpoint(dst)[0], x), net(x).asnumpy(), MODEL_TOL, name)


@pytest.mark.parametrize("name", KINDS)
def test_a_stock_checkpoint_starts_the_model_at_the_stock_function(name, tmp_path):
    """Finetuning from a stock MindCV checkpoint (depthwise and pointwise convs + BN): from_plain gives every
    block the stock conv's function."""
    from acnet_ms import create_model
    from acnet_ms.engine.loading import load_pretrained
    from acnet_ms.io.checkpoint import write_checkpoint

    ms.set_seed(3)
    stock = randomize_bn(mindcv.create_model("mobilenet_v2_035_96", num_classes=10), seed=4)
    path = str(tmp_path / "stock.ckpt")
    write_checkpoint(path, arrays_of(stock), dict(model="mobilenet_v2_035_96"))
    net = create_model("mobilenet_v2_035_96", num_classes=10, block_type=name)
    for i, (_, block) in enumerate(reparam_blocks(net)):
        randomize_block(block, seed=i)  # the entries from_plain does not set keep random values
    load_pretrained(net, path, log=lambda *_: None)
    x = images(6)
    net.set_train(False)
    stock.set_train(False)
    assert_close(net(x).asnumpy(), stock(x).asnumpy(), MODEL_TOL, "from a stock checkpoint")


# ------------------------------------------------------------------ options

@pytest.mark.parametrize("name", KINDS)
def test_bad_options_are_one_line_naming_the_option(name):
    kind = get_kind(name)
    with pytest.raises(ValueError) as err:
        check_block(name, {"no_such_option": 1})
    assert f"block_type {name} has no option 'no_such_option'" in str(err.value) and "\n" not in str(err.value)
    for option, spec in kind.options.items():
        if spec.choices is None and spec.parse is None:
            continue
        rejected = 0
        for junk in ("junk value", [1], -7):
            try:
                check_block(name, {option: junk})
            except ValueError as err:
                assert f"block option '{option}' of {name}" in str(err) and "\n" not in str(err), str(err)
                rejected += 1
        assert rejected, f"{name}: option '{option}' takes any value"
    res = run_main("train.py", "--model", "resnet18", "--block_type", name, "--block_options", "{no_such_option: 1}")
    assert_one_line_error(res, f"block_type {name} has no option 'no_such_option'")


def test_the_config_parser_names_a_bad_block_option_in_one_line():
    from acnet_ms.cli import UserError
    from acnet_ms.config.loader import parse

    for name in KINDS:
        with pytest.raises(UserError) as err:
            parse(["--model", "src20", "--block_type", name, "--block_options", "{no_such_option: 1}"], "test")
        assert "\n" not in str(err.value) and "no_such_option" in str(err.value)
