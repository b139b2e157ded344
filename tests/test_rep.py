"""What is the rep kind's own (RepVGG / MobileOne): its fold against numpy, where the identity and the scale
branch exist and sit, pointwise blocks, the one-conv form's gradients, the fully folded (deploy) form and its
ONNX graph, its summary lines and MAC ratio.  Geometry, folds, gradients, from_plain, options, AMP and MindCV
families: tests/test_kind_contract.py."""
import itertools

import numpy as np
import pytest
from helpers import SiteNet, Grads, assert_close, randomize_bn, assert_sample_sweep, SAMPLE_PARTS
from test_fold import bn as np_bn, conv2d, random_branch

import mindspore as ms
from mindspore import Tensor, nn, ops

from acnet_ms.kinds.rep import fold as rep_fold
from acnet_ms.kinds import check_block, get_kind
from acnet_ms.kinds.rep.cell import RepBlock
from acnet_ms.kinds import geometry

TOL = 2e-5  # float32, one block; errors seen are ~1e-6 relative
MODEL_TOL = 1e-4  # float32 through a whole network, relative to the largest logit


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
    kernel, bias = rep_fold.fold_rep([pick(b) for b in dense], pick(scale), ident if with_bn else ())
    assert (bias is None) == (not with_bn)
    got = reference_conv(x, kernel, bias, groups, pads=(1,) * 4)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)
    # a 1 x 1 site: parallel 1 x 1 branches and the identity, no scale branch
    dense = [random_branch(rng, (c, c // groups, 1, 1)) for _ in range(2)]
    kernel, bias = rep_fold.fold_rep([pick(b) for b in dense], None, ident if with_bn else (), bias=np.ones(c))
    ref = sum(use(reference_conv(x, b[0], groups=groups), b) for b in dense) + (np_bn(x, *ident) if with_bn else x)
    np.testing.assert_allclose(reference_conv(x, kernel, bias, groups), ref + 1, rtol=1e-10, atol=1e-10)


def mac_ratio(kernel_size, **options):
    return get_kind("rep").macs(64, 64, kernel_size, options)["ratio"]


def test_mac_ratio_counts_the_branch_convs():
    """The 'FLOP floor': conv multiply-adds of the training form per multiply-add of the plain conv, checked
    by counting those of every conv cell of a 3 x 3 64 -> 64 block."""
    assert mac_ratio(3) == pytest.approx(10 / 9)
    assert mac_ratio(3, num_kxk=4) == pytest.approx(37 / 9)
    assert mac_ratio(1, num_kxk=4) == 4 and mac_ratio(3, branch_bn=False) == 1.0
    assert mac_ratio(3, scale=False) == 1.0
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


def test_the_identity_exists_exactly_where_the_conv_keeps_the_input_grid():
    """Every kernel size, stride, padding (half, zero, 'same', 'valid') and grouping, and dilation 2 with
    paddings around 2 (no forward pass: every geometry's function is tests/test_kind_contract.py's)."""
    for case in CASES:
        k, stride, geo, _ = case
        block = _block(*case, num_kxk=2)
        assert block.has_identity == (stride == 1 and geo in ("pad-half", "same")), _ids(case)
        assert block.has_scale and len(block.dense) == 2
    for stride, padding in ((1, 2), (1, 0), (1, 1), (2, 2), (2, 3)):
        block = RepBlock(4, 4, 3, stride=stride, padding=padding, dilation=2)
        assert block.has_identity == (stride == 1 and padding == 2), (stride, padding)


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


@pytest.mark.parametrize("bad, match", [
    (dict(kernel_size=2), "kernel_size"), (dict(kernel_size=3.0), "kernel_size"), (dict(num_kxk=0), "num_kxk"),
    (dict(groups=3), "groups"), (dict(padding=-1), "padding"), (dict(has_bias=True), "has_bias"),
    (dict(pad_mode="full"), "pad_mode")])
def test_bad_arguments_fail_at_construction(bad, match):
    with pytest.raises(ValueError, match=match):
        RepBlock(4, 4, **dict(dict(kernel_size=3), **bad))


# ---------------------------------------------------------------- the quantization-aware form (QARepVGG)

@pytest.mark.parametrize("groups", [1, 4])
def test_fold_quant_aware_equals_its_branches(groups):
    """BN_post(sum_i BN_i(K_i * x) + S * x + x) == one conv (float64; random BNs, the post-BN's too)."""
    rng = np.random.default_rng(10 + groups)
    c, k = 4, 3
    x = rng.normal(size=(2, c, 7, 8))
    dense = [random_branch(rng, (c, c // groups, k, k)) for _ in range(2)]
    scale = rng.normal(size=(c, c // groups, 1, 1))
    post = random_branch(rng, (c, 1, 1, 1))[1:]
    inner = sum(np_bn(reference_conv(x, b[0], groups=groups, pads=(1,) * 4), *b[1:]) for b in dense)
    for identity in (True, False):
        ref = np_bn(inner + reference_conv(x, scale, groups=groups) + (x if identity else 0), *post)
        kernel, bias = rep_fold.fold_quant_aware(dense, (scale,), identity, post)
        got = reference_conv(x, kernel, bias, groups, pads=(1,) * 4)
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)
    kernel, bias = rep_fold.fold_quant_aware(dense, None, True, post)  # no 1 x 1 branch
    ref = np_bn(inner + x, *post)
    np.testing.assert_allclose(reference_conv(x, kernel, bias, groups, pads=(1,) * 4), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", [(3, 1, "pad-half", "1"), (3, 2, "pad-half", "dw"), (3, 1, "pad-0", "2"),
                                  (5, 1, "same", "1")], ids=_ids)
def test_the_quant_aware_block_is_qarepvggs(case):
    """QARepVGG's block: BNs on the k x k branches, a bare 1 x 1 conv on the centre tap, the bare identity,
    one BN after the sum; its eval output is that formula's (float64 numpy, random BNs), and its switched conv
    and its fold give the same."""
    block = randomize_bn(_block(*case, num_kxk=2, quant_aware=True), seed=3)
    bns = sorted(name for name, c in block.cells_and_names() if isinstance(c, nn.BatchNorm2d))
    assert bns == ["dense.0.bn", "dense.1.bn", "post_bn"] and not block.scale.has_bn
    assert block.has_identity == (case[1] == 1 and case[2] in ("pad-half", "same"))
    assert block.branch_bns() == [block.dense[0].bn, block.dense[1].bn]
    block.set_train(False)
    x = np.random.default_rng(1).normal(size=(2, 4, 9, 9)).astype(np.float32)
    y = block(Tensor(x)).asnumpy()
    stride, k, groups = block.stride[0], block.kernel_size, block.groups
    pads = _explicit_pads(block, x)
    arrays = state_of(block, "q")

    def bn_of(head):
        return tuple(arrays[f"q.{head}.{f}"] for f in ("gamma", "beta", "moving_mean", "moving_variance"))

    inner = sum(np_bn(reference_conv(x, arrays[f"q.dense.{i}.conv.weight"], None, groups, stride, pads),
                      *bn_of(f"dense.{i}.bn")) for i in range(2))
    t, b, l, r = pads
    centre = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (t, b), (l, r)))[:, :, k // 2:, k // 2:]
    inner = inner + reference_conv(centre, arrays["q.scale.conv.weight"], None, groups, stride)[
        :, :, :inner.shape[2], :inner.shape[3]]
    expected = np_bn(inner + (x if block.has_identity else 0), *bn_of("post_bn"))
    assert_close(y, expected, TOL, "QARepVGG's formula")
    kernel, bias, _ = get_kind("rep").fold(arrays, "q", block.reparam_info())
    assert_close(reference_conv(x, kernel, bias, groups, stride, pads), expected, TOL, "fold")
    block.switch_to_deploy()
    assert_close(block(Tensor(x)).asnumpy(), y, TOL, "switched")


@pytest.mark.parametrize("mode", ["pynative", pytest.param("graph", marks=pytest.mark.graph)])
def test_the_quant_aware_form_trains_at_mixed_precision_and_folds(mode):
    """Two O2 train steps of the four kinds of site in the quantization-aware form (the bare 1 x 1 branch and
    identity added to float32 BN outputs), then the fold of the float32 weights equals the blocks."""
    from test_kind_contract import train_step
    from acnet_ms.reparam.state import fold_state
    from acnet_ms.reparam.transform import block_layout

    net = randomize_bn(four_sites(quant_aware=True), seed=2)
    assert np.isfinite(train_step(net, "O2", "rep"))
    ms.set_context(mode=ms.PYNATIVE_MODE)
    params = {p.name: p.asnumpy() for p in net.get_parameters()}
    reference = four_sites(quant_aware=True)
    ms.load_param_into_net(reference, {k: ms.Parameter(Tensor(v), name=k) for k, v in params.items()},
                           strict_load=True)
    folded, _ = fold_state(params, block_layout(reference))
    plain = FourSites()
    ms.load_param_into_net(plain, {k: ms.Parameter(Tensor(v), name=k) for k, v in folded.items()}, strict_load=True)
    x = Tensor(np.random.default_rng(4).normal(size=(2, 3, 16, 16)).astype(np.float32))
    reference.set_train(False)
    plain.set_train(False)
    assert_close(plain(x).asnumpy(), reference(x).asnumpy(), MODEL_TOL, f"fold after O2 ({mode})")


@pytest.mark.parametrize("name, options", [("resnet18", {}), ("mobilenet_v2_035_96", dict(pointwise=True))])
def test_a_quant_aware_mindcv_model_converts_to_the_stock_checkpoint(name, options, tmp_path):
    """The quantization-aware form of a MindCV model (random BNs, the ones after the sums too) converts to the
    stock checkpoint: same names and order, strict load, the same logits."""
    import mindcv

    from acnet_ms import create_model
    from acnet_ms.convert.pipeline import convert_checkpoint
    from acnet_ms.io.checkpoint import read_checkpoint, write_checkpoint

    ms.set_seed(3)
    net = damp(randomize_bn(create_model(name, num_classes=10, block_type="rep",
                                         block_options=dict(quant_aware=True, **options)), seed=4))
    blocks = [c for _, c in net.cells_and_names() if isinstance(c, RepBlock)]
    assert blocks and all(b.quant_aware for b in blocks) and any(b.has_identity for b in blocks)
    src, dst = str(tmp_path / "qa.ckpt"), str(tmp_path / "plain.ckpt")
    write_checkpoint(src, {p.name: p.asnumpy() for p in net.get_parameters()},
                     dict(model=name, block_type="rep", block_options=net.acnet.block_options, num_classes=10))
    convert_checkpoint(src, dst, log=lambda *_: None)
    stock = mindcv.create_model(name, num_classes=10)
    arrays, _ = read_checkpoint(dst)
    assert list(arrays) == [p.name for p in stock.get_parameters()]
    params = {k: ms.Parameter(Tensor(v), name=k) for k, v in arrays.items()}
    assert ms.load_param_into_net(stock, params, strict_load=True) == ([], [])
    x = Tensor(np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32))
    net.set_train(False)
    stock.set_train(False)
    assert_close(stock(x).asnumpy(), net(x).asnumpy(), MODEL_TOL, name)


def test_quant_aware_needs_branch_bns_in_one_line():
    with pytest.raises(ValueError, match="^block_type rep: option 'quant_aware' needs branch_bn true"):
        check_block("rep", dict(quant_aware=True, branch_bn=False))
    with pytest.raises(ValueError, match="quant_aware needs branch_bn=True"):
        RepBlock(4, 4, 3, quant_aware=True, branch_bn=False)
    assert check_block("rep", dict(quant_aware=True))[1]["quant_aware"] is True


# ---------------------------------------------------------------- whole MindCV models

#: member -> (block options, summary line): MobileOne-style depthwise + pointwise (x2), pre-activation, and 1 x 1
#: convs a pointwise kind leaves plain with the reason
FAMILIES = {
    "mobilenet_v2_035_96": (dict(num_kxk=4, pointwise=True),
                            "52 convs became rep blocks (18 k x k, 34 1 x 1; 52 BN slot)"),
    "mobilenet_v1_025": (dict(num_kxk=4, pointwise=True),
                         "27 convs became rep blocks (14 k x k, 13 1 x 1; 27 BN slot)"),
    "densenet121": ({}, "59 k x k convs became rep blocks (1 BN slot, 58 no BN (bias-free))"),
    "mobilenet_v3_small_075": (dict(pointwise=True), "34 convs became rep blocks (12 k x k, 22 1 x 1; 34 BN slot); "
                               "stayed plain: 18 (1 x 1 conv with no BatchNorm after it (pointwise rep blocks take "
                               "conv + BN pairs))"),
}


def rep_model(name, options, seed=1):
    from acnet_ms import create_model

    ms.set_seed(seed)
    return damp(randomize_bn(create_model(name, num_classes=10, block_type="rep", block_options=options), seed + 1))


@pytest.mark.parametrize("name", FAMILIES)
def test_the_summary_line_and_the_blocks_of_a_model(name):
    """(Each family's conversion to the stock model: tests/test_kind_contract.py, and the pointwise blocks'
    in test_fold_bn_and_onnx_export below.)"""
    from acnet_ms import create_model, summary_line

    options, line = FAMILIES[name]
    net = create_model(name, num_classes=10, block_type="rep", block_options=options)
    blocks = [c for _, c in net.cells_and_names() if isinstance(c, RepBlock)]
    assert summary_line(net) == line
    assert all(len(b.dense) == check_block("rep", options)[1]["num_kxk"] for b in blocks)
    # densenet's 3 x 3 convs turn 128 channels into 32: none keeps its input
    assert any(b.has_identity for b in blocks) == (name != "densenet121")
    if name == "mobilenet_v1_025":  # its pointwise convs with as many channels out as in keep the grid
        assert any(b.kernel_size == 1 and b.has_identity for b in blocks)
    if name == "densenet121":
        assert sum(not b.branch_bn for b in blocks) == 58


def test_a_model_whose_own_blocks_are_repvgg_blocks_refuses_rep_in_one_line_and_takes_other_kinds(digits, tmp_path):
    """MindCV's RepVGG blocks already are rep's family (3 x 3, 1 x 1, identity): a rep block inside each would
    train the same branches twice, so the factory, train.py and convert.py (a .pth too) refuse it in one line
    naming the kinds that nest (DBB's branches inside the dense branch, as ACB's: docs/deploy.md)."""
    from acnet_ms import block_summary, create_model
    from acnet_ms.cli import UserError
    from acnet_ms.convert.pipeline import convert_pth
    from helpers import ROOT, run_main, small_run

    with pytest.raises(ValueError, match=r"repvgg_a0's own blocks are 22 RepVGG blocks, the family of block_type "
                                         r"rep: .* or acb, dbb, orepa"):
        create_model("repvgg_a0", num_classes=10, block_type="rep")
    assert block_summary(create_model("repvgg_a0", num_classes=10, block_type="dbb"))["blocks"] == 22
    res = run_main("train.py", *small_run(digits, tmp_path / "run", "--model", "repvgg_a0", "--block_type", "rep"))
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]  # (the demo recipe's
    assert res.returncode == 2 and len(errors) == 1, res.stderr[-2000:]                 # gamma_init warns)
    assert "own blocks are 22 RepVGG blocks, the family of block_type rep" in errors[0]
    out = tmp_path / "a0.ckpt"
    with pytest.raises(UserError, match="the family of block_type rep"):
        convert_pth(f"{ROOT}/tests/fixtures/pth/repvgg_a0.pth", str(out), model="repvgg_a0", block_type="rep",
                    log=lambda *_: None)
    assert not out.exists() and not (tmp_path / "run").exists()


def test_what_the_entries_show_of_the_options():
    """Every option but a BN-free identity shows in the entries (the round trip through models of every
    option set: tests/test_kind_contract.py)."""
    # blocks without BNs: their identity has no entry, so it is unseen; the defaults show otherwise
    kind = get_kind("rep")
    w = np.zeros((4, 4, 3, 3), np.float32)
    assert kind.infer_options({"a.dense.0.conv.weight": w, "a.dense.1.conv.weight": w}, ["a"]) == (
        dict(num_kxk=2, pointwise=False, branch_bn=False, quant_aware=False, csla=False, scale=False), ["identity"])
    with_bn = {"a.dense.0.conv.weight": w, "a.dense.0.bn.gamma": w[:, 0, 0, 0], "a.scale.conv.weight": w[..., :1, :1],
               "a.identity_bn.gamma": w[:, 0, 0, 0]}
    assert kind.infer_options(with_bn, ["a"]) == (dict(num_kxk=1, pointwise=False, branch_bn=True,
                                                       quant_aware=False, csla=False, scale=True, identity=True), [])
    # the quantization-aware form: a BN after the sum, none on the 1 x 1 branch; its identity has no entry
    aware = {"a.dense.0.conv.weight": w, "a.dense.0.bn.gamma": w[:, 0, 0, 0], "a.scale.conv.weight": w[..., :1, :1],
             "a.post_bn.gamma": w[:, 0, 0, 0]}
    assert kind.infer_options(aware, ["a"]) == (dict(num_kxk=1, pointwise=False, branch_bn=True, quant_aware=True,
                                                     csla=False, scale=True), ["identity"])
    # the constant-scale form: gains show it, and the identity's gain whether the identity is there
    gains = {"a.dense.0.conv.weight": w, "a.dense.0.gain": w[:, 0, 0, 0], "a.scale.conv.weight": w[..., :1, :1],
             "a.scale.gain": w[:, 0, 0, 0]}
    shown = dict(num_kxk=1, pointwise=False, quant_aware=False, csla=True, scale=True)
    assert kind.infer_options(gains, ["a"]) == (dict(shown, identity=False), [])
    assert kind.infer_options(dict(gains, **{"a.identity_gain": w[:, 0, 0, 0]}), ["a"]) == (
        dict(shown, identity=True), [])


def test_fold_bn_and_onnx_export(tmp_path):
    """convert --fold_bn --export onnx: the fully folded model and its graph compute the rep model's logits."""
    import onnxruntime as ort

    from acnet_ms import create_model
    from acnet_ms.io.checkpoint import read_checkpoint, write_checkpoint
    from acnet_ms.convert.pipeline import convert_checkpoint
    from helpers import images, load_strict

    options = dict(num_kxk=2, pointwise=True)
    net = rep_model("mobilenet_v1_025", options, seed=8)
    src, dst = str(tmp_path / "rep.ckpt"), str(tmp_path / "deploy.ckpt")
    write_checkpoint(src, {p.name: p.asnumpy() for p in net.get_parameters()},
                     dict(model="mobilenet_v1_025", block_type="rep", block_options=options, num_classes=10))
    convert_checkpoint(src, dst, fold_bn=True, export="onnx", input_shape="1,3,64,64", log=lambda *_: None)
    arrays, meta = read_checkpoint(dst)
    assert meta["deploy"] is True
    deploy = load_strict(create_model("mobilenet_v1_025", num_classes=10, deploy=True), arrays)
    x = images(3, batch=1)
    net.set_train(False)
    expected = net(x).asnumpy()
    assert_close(deploy(x).asnumpy(), expected, MODEL_TOL, "fully folded")
    session = ort.InferenceSession(str(tmp_path / "deploy.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.asnumpy()})
    assert_close(got, expected, MODEL_TOL, "onnx")


def FourSites():
    """The four kinds of rep block, three with an identity (helpers.SiteNet at stride 1): a 3 x 3 conv into a
    BN, one with its own bias, a pointwise conv into a BN and a pre-activation 3 x 3 conv (no BN, no bias)."""
    return SiteNet(stride=1)


def four_sites(**options):
    from acnet_ms.reparam.transform import to_blocks, trace

    ms.set_seed(0)
    net = FourSites()
    return to_blocks(net, trace(net, (1, 3, 16, 16)), "rep", dict(dict(pointwise=True, num_kxk=2), **options))


@pytest.mark.graph
@pytest.mark.parametrize("amp_level, branch_bn", [("O2", True), pytest.param("O3", False, marks=pytest.mark.slow)],
                         ids=["O2-branch_bn", "O3-one_conv"])
def test_each_kind_of_block_trains_evaluates_and_folds_at_mixed_precision(amp_level, branch_bn):
    """One graph-mode train step of the four kinds of rep block (pointwise ones and pre-activation ones with an
    identity among them), then the fold of the float32 weights equals the blocks (every kind at every AMP
    level: tests/test_kind_contract.py)."""
    from acnet_ms.config.loader import defaults
    from acnet_ms.reparam.state import fold_state
    from acnet_ms.training.factories import build_train_step
    from acnet_ms.training.loop import train_call
    from acnet_ms.reparam.transform import block_layout

    net = randomize_bn(four_sites(branch_bn=branch_bn), seed=2)
    layout = block_layout(net)
    assert {k: (v["slot"], v["branch_bn"], v["has_identity"]) for k, v in layout.items()} == dict(
        conv_bn=("bn" if branch_bn else "none", branch_bn, False), conv_bias=("bias", branch_bn, True),
        pointwise=("bn" if branch_bn else "none", branch_bn, True), conv_plain=("none", False, True))
    cfg = dict(defaults(), device_target="CPU", model="four_sites", block_type="rep", opt="momentum",
               amp_level=amp_level, weight_decay=1e-4, lr=0.05)
    step, _ = build_train_step(net, cfg, [0.05] * 4)
    rng = np.random.default_rng(0)
    x = Tensor(rng.normal(size=(2, 3, 16, 16)).astype(np.float32))
    loss = train_call(step, x, Tensor(rng.integers(0, 10, 2).astype(np.int32)), True, cfg)[0]
    assert np.isfinite(float(loss.asnumpy()))
    net.set_train(False)
    amp_out = net(x).asnumpy().astype(np.float32)
    assert np.isfinite(amp_out).all()

    ms.set_context(mode=ms.PYNATIVE_MODE)
    params = {p.name: p.asnumpy().astype(np.float32) for p in net.get_parameters()}  # float32 master weights
    reference = four_sites(branch_bn=branch_bn)
    ms.load_param_into_net(reference, {k: ms.Parameter(Tensor(v), name=k) for k, v in params.items()},
                           strict_load=True)
    plain = FourSites()
    folded, _ = fold_state(params, block_layout(reference))
    ms.load_param_into_net(plain, {k: ms.Parameter(Tensor(v), name=k) for k, v in folded.items()}, strict_load=True)
    reference.set_train(False)
    plain.set_train(False)
    expected = reference(x).asnumpy()
    assert_close(plain(x).asnumpy(), expected, 1e-4, f"fold at {amp_level}")
    assert_close(amp_out, expected, 0.05 if amp_level != "O0" else 1e-5, f"{amp_level} vs float32")


@pytest.mark.parametrize("options", [dict(branch_bn=True), dict(branch_bn=False), dict(quant_aware=True)],
                         ids=["branch_bn", "one_conv", "quant_aware"])
def test_from_plain_keeps_the_function_of_each_kind_of_block(options):
    """A plain network's entries mapped onto each kind of block (BN slot, conv bias as a BN, pointwise,
    pre-activation with an identity) compute what the plain network computes."""
    from acnet_ms.reparam.state import plain_to_blocks
    from acnet_ms.reparam.transform import block_layout

    ms.set_seed(4)
    plain = randomize_bn(FourSites(), seed=5)
    plain.conv_bias.bias.set_data(Tensor(np.linspace(-1, 1, 8).astype(np.float32)))
    net = four_sites(**options)
    if options.get("quant_aware"):  # where the block ends in BNs (a BN slot, a conv bias), not pre-activation
        assert {k: v["quant_aware"] for k, v in block_layout(net).items()} == dict(
            conv_bn=True, conv_bias=True, pointwise=True, conv_plain=False)
    state = plain_to_blocks({p.name: p.asnumpy() for p in plain.get_parameters()}, block_layout(net))
    mine = {p.name for p in net.get_parameters()}
    assert set(state) <= mine
    ms.load_param_into_net(net, {k: ms.Parameter(Tensor(v), name=k) for k, v in state.items()})
    x = Tensor(np.random.default_rng(6).normal(size=(2, 3, 16, 16)).astype(np.float32))
    plain.set_train(False)
    net.set_train(False)
    assert_close(net(x).asnumpy(), plain(x).asnumpy(), 1e-5, "from plain")


def test_gamma_init_sets_every_branch_bn_and_a_bad_one_is_one_line():
    import acnet_ms
    from acnet_ms.kinds.rep.cell import RepBlock

    net = acnet_ms.create_model("src20", num_classes=10, block_type="rep", block_options={"gamma_init": 0.25})
    blocks = [c for _, c in net.cells_and_names() if isinstance(c, RepBlock)]
    assert blocks and all(b.has_identity for b in blocks[1:3])
    gammas = [n.gamma.asnumpy() for b in blocks for n in b.branch_bns()]
    assert len(gammas) > 2 * len(blocks) and all(np.all(g == 0.25) for g in gammas)
    with pytest.raises(ValueError, match="block option 'gamma_init' of rep"):
        acnet_ms.create_model("src20", num_classes=10, block_type="rep", block_options={"gamma_init": "x"})


@pytest.mark.parametrize("part", SAMPLE_PARTS)
def test_the_sample_sweep_trains_converts_and_strict_loads_each_site_type(part, tmp_path):
    """A MindCV model per site type (BN-free, grouped, depthwise, dilated, a deep ResNet) through the zoo sweep's
    stages with rep blocks: a train step under the recipe's AMP level in PyNative (and graph mode for the cheap
    ones), conversion, strict load, the folded function; ``ci``: the BN-free model in PyNative, ``zoo``: the rest
    (``make test-all``)."""
    assert_sample_sweep("rep", tmp_path, part)
