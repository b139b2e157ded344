"""RepOpt training: the plain conv trained with the gradient multipliers moves exactly as its constant-scale
(csla) rep block trained branch by branch.

The reference is float64 numpy written here from the definitions: each branch convolves with its own kernel
and geometry (the 1 x 1 branch on its own padding or crop, the identity adds the input), its gradient comes
from its own convolution, and SGD with momentum and weight decay moves each branch.  Against it: the
multiplier rule in numpy (exact to rounding), and MindSpore's one conv under ``RepOptMomentum`` beside the
constant-scale Cell under ``nn.Momentum`` (float32), over the contract's geometries.
"""
import itertools
import os

import numpy as np
import pytest

from acnet_ms.kinds.rep import fold as rep_fold
from acnet_ms.kinds.rep import repopt as rules

GEOMETRY = dict(k=(3, 5), stride=(1, 2), padding=("half", 0, "above", "same"), groups=("1", "2", "dw"),
                dilation=(1, 2))


def _channels(groups):
    return (4, 4, 4) if groups == "dw" else (4, 6, 2) if groups == "2" else (4, 4, 1)


def _pads(padding, k, dilation, stride, size):
    half = dilation * (k // 2)
    if padding == "half":
        return (half,) * 4
    if padding == "above":
        return (half + 1,) * 4
    if padding == "same":  # MindSpore's: output ceil(size / stride), the odd row/column at the end
        out = -(-size // stride)
        total = max((out - 1) * stride + dilation * (k - 1) + 1 - size, 0)
        return (total // 2, total - total // 2) * 2
    return (padding,) * 4


def _window(x, pads):
    """``x`` padded by the non-negative pads and cropped by the negative ones."""
    t, b, l, r = pads
    x = np.pad(x, ((0, 0), (0, 0), (max(t, 0), max(b, 0)), (max(l, 0), max(r, 0))))
    return x[:, :, max(-t, 0):x.shape[2] - max(-b, 0), max(-l, 0):x.shape[3] - max(-r, 0)]


def _patches(x, k, stride, pads, dilation, groups):
    """(N, g, C/g, k, k, OH, OW): the input under each tap of each output pixel."""
    x = _window(x, pads)
    n, c, h, w = x.shape
    oh, ow = (h - dilation * (k - 1) - 1) // stride + 1, (w - dilation * (k - 1) - 1) // stride + 1
    out = np.empty((n, c, k, k, oh, ow))
    for i, j in itertools.product(range(k), repeat=2):
        out[:, :, i, j] = x[:, :, i * dilation:i * dilation + (oh - 1) * stride + 1:stride,
                            j * dilation:j * dilation + (ow - 1) * stride + 1:stride]
    return out.reshape(n, groups, c // groups, k, k, oh, ow)


def conv(x, w, stride, pads, dilation, groups):
    p = _patches(x, w.shape[2], stride, pads, dilation, groups)
    wg = w.reshape(groups, w.shape[0] // groups, *w.shape[1:])
    y = np.einsum("ngcijhw,gocij->ngohw", p, wg)
    return y.reshape(y.shape[0], -1, *y.shape[3:])


def conv_weight_grad(x, dy, shape, stride, pads, dilation, groups):
    p = _patches(x, shape[2], stride, pads, dilation, groups)
    dyg = dy.reshape(dy.shape[0], groups, shape[0] // groups, *dy.shape[2:])
    return np.einsum("ngcijhw,ngohw->gocij", p, dyg).reshape(shape)


class Site:
    """One constant-scale site of a geometry: its branches, each convolved on its own grid (float64)."""

    def __init__(self, k, stride, padding, groups, dilation, size=11, seed=0):
        rng = np.random.default_rng(seed)
        self.cin, self.cout, self.groups = _channels(groups)
        self.k, self.stride, self.dilation = k, stride, dilation
        self.pads = _pads(padding, k, dilation, stride, size)
        half = dilation * (k // 2)
        self.centre_pads = tuple(p - half for p in self.pads)  # the 1 x 1 branch reads the centre tap
        self.identity = self.cin == self.cout and stride == 1 and self.pads == (half,) * 4
        shape = (self.cout, self.cin // self.groups, k, k)
        self.kernels = [rng.normal(0, 0.3, shape) for _ in range(2)] + [rng.normal(0, 0.3, shape[:2] + (1, 1))]
        self.gains = [rng.uniform(0.3, 1.6, self.cout) for _ in range(3)]
        self.identity_gain = rng.uniform(0.5, 1.5, self.cout) if self.identity else None
        self.x = [rng.normal(size=(2, self.cin, size, size)) for _ in range(3)]
        self.target = [rng.normal(size=conv(x, self.kernels[0], stride, self.pads, dilation, self.groups).shape)
                       for x in self.x]

    def branch_outputs(self, kernels, x):
        outs = [g.reshape(1, -1, 1, 1) * conv(x, kern, self.stride, self.pads, self.dilation, self.groups)
                for kern, g in zip(kernels[:2], self.gains)]
        outs.append(self.gains[2].reshape(1, -1, 1, 1) * conv(x, kernels[2], self.stride, self.centre_pads, 1,
                                                               self.groups))
        if self.identity:
            outs.append(self.identity_gain.reshape(1, -1, 1, 1) * x)
        return outs

    def branch_grads(self, kernels, x, target):
        """dL/dK of each branch, L = 1/2 ||y - target||^2, each from its own convolution."""
        dy = sum(self.branch_outputs(kernels, x)) - target
        grads = [conv_weight_grad(x, g.reshape(1, -1, 1, 1) * dy, kern.shape, self.stride, self.pads,
                                  self.dilation, self.groups) for kern, g in zip(kernels[:2], self.gains)]
        grads.append(conv_weight_grad(x, self.gains[2].reshape(1, -1, 1, 1) * dy, kernels[2].shape, self.stride,
                                      self.centre_pads, 1, self.groups))
        return grads

    def fold(self, kernels):
        return rep_fold.fold_csla(list(zip(kernels[:2], self.gains[:2])), (kernels[2], self.gains[2]),
                                  self.identity_gain)[0]

    def plain_grad(self, kernel, x, target):
        dy = conv(x, kernel, self.stride, self.pads, self.dilation, self.groups) - target
        return conv_weight_grad(x, dy, kernel.shape, self.stride, self.pads, self.dilation, self.groups)


def branchwise_sgd(site, steps, lr, momentum, decay, nesterov):
    kernels = [k.copy() for k in site.kernels]
    velocity = [np.zeros_like(k) for k in kernels]
    for n in range(steps):
        x, target = site.x[n % 3], site.target[n % 3]
        for i, grad in enumerate(site.branch_grads(kernels, x, target)):
            d = grad + decay * kernels[i]
            velocity[i] = momentum * velocity[i] + d
            kernels[i] = kernels[i] - lr * (d + momentum * velocity[i] if nesterov else velocity[i])
    return site.fold(kernels)


def repopt_sgd(site, steps, lr, momentum, decay, nesterov):
    kernel = site.fold(site.kernels)
    multiplier = rules.grad_multiplier(kernel.shape, site.gains[:2], site.gains[2])
    anchor = rules.decay_anchor(kernel.shape, site.identity_gain)
    velocity = np.zeros_like(kernel)
    for n in range(steps):
        d = multiplier * site.plain_grad(kernel, site.x[n % 3], site.target[n % 3]) + decay * (kernel - anchor)
        velocity = momentum * velocity + d
        kernel = kernel - lr * (d + momentum * velocity if nesterov else velocity)
    return kernel


def geometry_cases():
    cases = []
    for k, stride, padding, groups, dilation in itertools.product(*GEOMETRY.values()):
        cases.append(pytest.param(k, stride, padding, groups, dilation,
                                  id=f"k{k}-s{stride}-p{padding}-g{groups}-d{dilation}"))
    return cases


@pytest.mark.parametrize("k, stride, padding, groups, dilation", geometry_cases())
def test_the_multiplier_rule_is_the_branches_sgd_in_float64(k, stride, padding, groups, dilation):
    site = Site(k, stride, padding, groups, dilation, seed=k * 7 + stride)
    for nesterov in (False, True):
        branches = branchwise_sgd(site, 6, 0.05, 0.9, 0.01, nesterov)
        plain = repopt_sgd(site, 6, 0.05, 0.9, 0.01, nesterov)
        assert np.abs(plain - branches).max() <= 1e-12 * max(1.0, np.abs(branches).max())
        moved = np.abs(branches - site.fold(site.kernels)).max()
        assert moved > 1e-2  # the steps did move the weights


def test_the_rule_is_not_a_plain_step_and_needs_the_shifted_decay():
    """Without the multiplier, or decaying towards 0 instead of g_id I, the one conv leaves the branches' path."""
    site = Site(3, 1, "half", "1", 1, seed=5)
    assert site.identity
    branches = branchwise_sgd(site, 4, 0.05, 0.9, 0.01, False)
    kernel = site.fold(site.kernels)
    multiplier = rules.grad_multiplier(kernel.shape, site.gains[:2], site.gains[2])
    for rule in ("no multiplier", "decay to zero"):
        w, v = kernel.copy(), np.zeros_like(kernel)
        for n in range(4):
            g = site.plain_grad(w, site.x[n % 3], site.target[n % 3])
            d = (g if rule == "no multiplier" else multiplier * g) + 0.01 * w
            v = 0.9 * v + d
            w = w - 0.05 * v
        assert np.abs(w - branches).max() > 1e-4, rule


def test_the_multiplier_is_the_sum_of_squared_gains_with_the_centre_taps_own():
    dense = [np.array([1.0, 2.0]), np.array([0.5, 1.0])]
    m = rules.grad_multiplier((2, 3, 3, 3), dense, np.array([3.0, 0.0]))
    assert m.shape == (2, 3, 3, 3)
    assert np.all(m[0] == np.where(np.arange(9).reshape(3, 3) == 4, 1.25 + 9.0, 1.25))
    assert np.all(m[1] == 5.0)
    assert np.all(rules.grad_multiplier((2, 3, 3, 3), dense) == m - np.pad(m[:, :, 1:2, 1:2] - m[:, :, :1, :1],
                                                                           ((0, 0), (0, 0), (1, 1), (1, 1))))
    anchor = rules.decay_anchor((2, 2, 3, 3), np.array([2.0, 3.0]))
    assert anchor[0, 0, 1, 1] == 2.0 and anchor[1, 1, 1, 1] == 3.0 and np.count_nonzero(anchor) == 2
    assert not rules.decay_anchor((2, 2, 3, 3)).any()


# ------------------------------------------------------------------ MindSpore: the Cell and the optimizer

def _ms_pair(site, padding):
    """The constant-scale RepBlock of ``site`` (gains fixed) and the plain conv at its fold."""
    from mindspore import Tensor

    from acnet_ms.kinds.geometry import block_conv
    from acnet_ms.kinds.rep.cell import RepBlock

    same = padding == "same"
    block = RepBlock(site.cin, site.cout, site.k, site.stride, None if same else site.pads, site.dilation,
                     site.groups, num_kxk=2, csla=True, pad_mode="same" if same else "pad")
    assert block.has_identity == site.identity
    weights = [block.dense[0].conv.weight, block.dense[1].conv.weight, block.scale.conv.weight]
    for param, value in zip(weights + block.gains(), site.kernels + site.gains + [site.identity_gain] * site.identity):
        param.set_data(Tensor(value.astype(np.float32)))
    for gain in block.gains():
        gain.requires_grad = False
    plain = block_conv(block, False)
    plain.weight.set_data(Tensor(site.fold(site.kernels).astype(np.float32)))
    return block, plain


def _train(net, optimizer, site, steps):
    import mindspore as ms
    from mindspore import Tensor, nn

    class Loss(nn.Cell):
        def __init__(self):
            super().__init__()
            self.net = net

        def construct(self, x, target):
            return 0.5 * ((self.net(x) - target) ** 2).sum()

    step = nn.TrainOneStepCell(Loss(), optimizer)
    for n in range(steps):
        step(Tensor(site.x[n % 3].astype(np.float32)), Tensor(site.target[n % 3].astype(np.float32)))
    return ms


MS_CASES = [(3, 1, "half", "1", 1), (3, 2, 0, "2", 1), (5, 1, "above", "dw", 2), (3, 1, "same", "2", 2),
            (5, 2, "same", "1", 1), (3, 1, "half", "dw", 1), (5, 1, 0, "1", 2)]


@pytest.mark.parametrize("case", [pytest.param(c, id="-".join(map(str, c))) for c in MS_CASES]
                         + [pytest.param(c, id="graph-" + "-".join(map(str, c)), marks=pytest.mark.graph)
                            for c in MS_CASES[:2]])
def test_the_plain_conv_under_repoptmomentum_trains_as_its_constant_scale_block(case):
    from mindspore import nn

    from acnet_ms.training.repopt import RepOptMomentum, Scales

    site = Site(*case, seed=11)
    lr, momentum, decay, steps = 1e-4, 0.9, 0.5, 6
    for nesterov in (False, True):
        block, plain = _ms_pair(site, case[2])
        _train(block, nn.Momentum(block.trainable_params(), lr, momentum, weight_decay=decay,
                                  use_nesterov=nesterov), site, steps)
        scales = {plain.weight.name: Scales(tuple(site.gains[:2]), site.gains[2], site.identity_gain)}
        _train(plain, RepOptMomentum(plain.trainable_params(), lr, momentum, scales, weight_decay=decay,
                                     use_nesterov=nesterov), site, steps)
        branches, one = block.fold_branches()[0], plain.weight.asnumpy()
        size = np.abs(branches).max()
        assert np.abs(one - branches).max() <= 2e-5 * size
        assert np.abs(branches - site.fold(site.kernels)).max() > 100 * 2e-5 * size  # it moved
        if not nesterov:  # MindSpore 2.8's CPU kernel takes use_nesterov as plain momentum: both sides alike
            reference = branchwise_sgd(site, steps, lr, momentum, decay, nesterov)
            assert np.abs(branches - reference).max() <= 2e-5 * size


def test_other_parameters_keep_their_gradients_and_unknown_names_are_refused():
    import mindspore as ms
    from mindspore import Parameter, Tensor

    from acnet_ms.training.repopt import RepOptGradients, Scales

    site = Parameter(Tensor(np.zeros((2, 2, 3, 3), np.float32)), name="a.weight")
    other = Parameter(Tensor(np.zeros(2, np.float32)), name="a.bias")
    scales = {"a.weight": Scales((np.array([2.0, 3.0]),), None, np.array([1.0, 2.0]))}
    transform = RepOptGradients([site, other], scales, [0.5, 0.5])
    grads = transform((Tensor(np.ones((2, 2, 3, 3), np.float32)), Tensor(np.full(2, 7.0, np.float32))))
    g = grads[0].asnumpy()
    assert np.all(g[0] == np.where(np.eye(2)[0].reshape(2, 1, 1) * (np.arange(9).reshape(3, 3) == 4), 4.0 - 0.5,
                                   4.0))
    assert g[1, 1, 1, 1] == 9.0 - 1.0 and g[1, 0, 1, 1] == 9.0
    assert np.all(grads[1].asnumpy() == 7.0)
    with pytest.raises(ValueError, match="the scales name b.weight, which is no trained parameter"):
        RepOptGradients([site], {"b.weight": scales["a.weight"]})
    assert ms  # imported for its side effects on the context


# ------------------------------------------------------------------ a whole model, through the run's factories

def _model_steps(net, repopt, steps=3):
    from mindspore import Tensor

    from acnet_ms.config.loader import defaults
    from acnet_ms.training.factories import build_train_step
    from acnet_ms.training.loop import train_call

    cfg = dict(defaults(), device_target="CPU", model="src20", opt="momentum", weight_decay=1e-3, lr=0.05,
               repopt_scales="hs.ckpt" if repopt else None)
    step, _ = build_train_step(net, cfg, [0.05] * steps, repopt=repopt)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        x = Tensor(rng.normal(size=(4, 3, 16, 16)).astype(np.float32))
        y = Tensor(rng.integers(0, 10, 4).astype(np.int32))
        losses.append(float(train_call(step, x, y, True, cfg)[0].asnumpy()))
    return losses


@pytest.mark.parametrize("mode", ["pynative", pytest.param("graph", marks=pytest.mark.graph)])
def test_a_plain_model_under_repopt_trains_as_its_constant_scale_form_with_fixed_gains(mode):
    """src20's 19 convs: the train step's RepOpt gradients on the plain model, against the constant-scale model
    with its gains held fixed under the same optimizer; every weight and BN statistic after three steps."""
    from mindspore import Tensor

    from acnet_ms import create_model
    from acnet_ms.reparam.forms import STOCK, Forms
    from acnet_ms.reparam.transform import block_layout
    from acnet_ms.training.repopt import fix_gains, gain_parameters, scales_of, start_plain

    import mindspore as ms

    ms.set_seed(0)
    csla = create_model("src20", num_classes=10, block_type="rep", block_options={"csla": True})
    rng = np.random.default_rng(4)
    for gains in gain_parameters(csla).values():
        for gain in gains:
            gain.set_data(Tensor(rng.uniform(0.4, 1.4, gain.shape).astype(np.float32)))
    layout = block_layout(csla)
    scales = scales_of({p.name: p.asnumpy() for p in csla.get_parameters()}, layout)
    assert len(scales) == 19 and sum(s.identity is not None for s in scales.values()) >= 10
    fix_gains(csla, scales)
    plain = create_model("src20", num_classes=10)
    start_plain(plain, csla)
    before = {p.name: p.asnumpy().copy() for p in plain.get_parameters()}
    branch_losses = _model_steps(csla, None)
    plain_losses = _model_steps(plain, scales)
    assert np.allclose(plain_losses, branch_losses, rtol=1e-4), (plain_losses, branch_losses)
    folded = Forms(layout).move({p.name: p.asnumpy() for p in csla.get_parameters()}, STOCK).state
    trained = {p.name: p.asnumpy() for p in plain.get_parameters()}
    assert set(trained) <= set(folded)
    moved = 0
    for name, value in trained.items():
        step = np.abs(value - before[name]).max()  # float32 rounding, which BN's backward amplifies, against
        assert np.abs(value - folded[name]).max() <= 0.02 * step + 1e-6, name  # how far the steps went
        moved += bool(step > 1e-3 * max(np.abs(value).max(), 1e-3))
    assert moved > 40


# ------------------------------------------------------------------ train.py --repopt_scales

def _hs_checkpoint(path, model="src20"):
    """A hyper-search checkpoint of ``model`` (random weights and gains), as a run records it."""
    from helpers import training_checkpoint

    training_checkpoint(path, model, block_type="rep", block_options={"csla": True},
                        meta=dict(block_options={"csla": True}))
    return str(path)


@pytest.mark.slow
def test_a_hyper_search_then_a_repopt_run_give_a_plain_checkpoint_that_converts_validates_and_goes_int8(digits,
                                                                                                       tmp_path):
    """docs/repopt.md's commands on the small lists: the hyper-search run, the RepOpt run from its checkpoint
    (the plain model, nothing to fold), convert.py --fold_bn --export onnx --int8, validate.py on each form."""
    import mindspore as ms
    from mindspore import Tensor

    from acnet_ms import create_model
    from acnet_ms.io.checkpoint import read_checkpoint
    from helpers import run_script, small_run
    from test_quantize import int8_scores

    hs = str(tmp_path / "hs")
    res = run_script("train.py", *small_run(digits, hs, "--block_type", "rep", "--block_options", "{csla: true}",
                                            "--epoch_size", 1, "--val_while_train", False))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "src20 (rep: csla true), 10 classes" in res.stdout, res.stdout[:2000]
    arrays, _ = read_checkpoint(os.path.join(hs, "src20_rep-e001.ckpt"))
    gains = [v for k, v in arrays.items() if k.endswith(".gain") and not k.startswith("moments.")]
    assert len(gains) == 19 * 2 and any(np.abs(g - 1).max() > 1e-4 for g in gains)  # the search moved them
    run = str(tmp_path / "repopt")
    res = run_script("train.py", *small_run(digits, run, "--block_type", "base", "--repopt_scales",
                                            os.path.join(hs, "src20_rep-e001.ckpt"), "--epoch_size", 2))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "src20 (base), 10 classes" in res.stdout and "19 convs under gradient multipliers" in res.stdout
    trained = os.path.join(run, "src20_base-e002.ckpt")
    state, meta = read_checkpoint(trained)
    assert meta["block_type"] == "base" and meta["config"]["repopt_scales"].endswith("src20_rep-e001.ckpt")
    base = create_model("src20", num_classes=10)
    params = {k: ms.Parameter(Tensor(v), name=k) for k, v in state.items() if not k.startswith(("moments.", "accum"))
              and k in base.parameters_dict()}
    assert ms.load_param_into_net(base, params, strict_load=True) == ([], [])
    scores = int8_scores(trained, digits, tmp_path, "deploy")
    assert len({r["correct1"] for r in scores[:3]}) == 1, [r["correct1"] for r in scores]
    # resuming needs the same scales
    res = run_script("train.py", *small_run(digits, run, "--block_type", "base", "--resume", trained,
                                            "--epoch_size", 3))
    assert res.returncode == 2 and "a RepOpt run's checkpoint" in res.stderr, res.stderr[-2000:]


def test_bad_repopt_inputs_are_one_line_errors_naming_the_file_or_option(digits, tmp_path):
    from helpers import assert_one_line_error, run_main, small_run, training_checkpoint

    hs = _hs_checkpoint(tmp_path / "hs.ckpt")
    out = str(tmp_path / "run")
    cases = [(("--repopt_scales", str(tmp_path / "none.ckpt")), ("none.ckpt", "no such checkpoint file",
                                                                   "repopt_scales")),
             (("--repopt_scales", hs, "--block_type", "acb"), ("repopt_scales", "block_type must be base",
                                                                "got acb")),
             (("--repopt_scales", hs, "--model", "src56"), ("hs.ckpt", "the gains of a src20", "trains src56"))]
    plain = str(tmp_path / "plain_rep.ckpt")
    training_checkpoint(plain, "src20", block_type="rep")
    cases.append((("--repopt_scales", plain), ("plain_rep.ckpt", "no constant-scale rep block", "csla: true")))
    for extra, fragments in cases:
        res = run_main("train.py", *small_run(digits, out, "--block_type", "base", *extra))
        assert_one_line_error(res, *fragments)
        assert not os.path.exists(out)


def test_the_api_example_of_docs_repopt_runs(tmp_path):
    """docs/repopt.md's example, as a user would paste it: it trains, saves a checkpoint the plain model
    strict-loads, and says what it did."""
    import subprocess
    import sys

    from helpers import ROOT, user_env

    with open(os.path.join(ROOT, "docs", "repopt.md"), encoding="utf-8") as f:
        text = f.read()
    code = text.split("<!-- example: repopt-api -->", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "example.py"
    script.write_text(code)
    res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=user_env(), capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "19 convs trained as their constant-scale blocks" in res.stdout
    import mindspore as ms

    from acnet_ms import create_model

    plain = create_model("src20", num_classes=10)
    params = ms.load_checkpoint(str(tmp_path / "src20_repopt.ckpt"))
    assert ms.load_param_into_net(plain, {k: v for k, v in params.items() if k in plain.parameters_dict()},
                                  strict_load=True) == ([], [])


@pytest.mark.parametrize("model", ["resnet18", pytest.param("mobilenet_v2_035_96", marks=pytest.mark.slow)])
def test_a_repopt_trained_mindcv_model_is_a_checkpoint_stock_mindcv_loads(model, tmp_path):
    """A MindCV model trained a few steps by RepOptMomentum (the search's form built by the factory) saves a
    checkpoint that ``mindcv.create_model(..., checkpoint_path=...)`` loads and computes with."""
    import mindcv
    import mindspore as ms
    from mindspore import Tensor, nn

    from acnet_ms import block_layout, create_model
    from acnet_ms.training.repopt import RepOptMomentum, fix_gains, scales_of, start_plain

    ms.set_seed(1)
    search = create_model(model, num_classes=10, block_type="rep", block_options={"csla": True})
    scales = scales_of({p.name: p.asnumpy() for p in search.get_parameters()}, block_layout(search))
    assert len(scales) == len(block_layout(search)) > 5
    plain = create_model(model, num_classes=10)
    start_plain(plain, fix_gains(search, scales))
    optimizer = RepOptMomentum(plain.trainable_params(), 0.01, 0.9, scales, weight_decay=1e-4)
    step = nn.TrainOneStepCell(nn.WithLossCell(plain, nn.CrossEntropyLoss()), optimizer)
    rng = np.random.default_rng(0)
    x = Tensor(rng.normal(size=(2, 3, 64, 64)).astype(np.float32))
    y = Tensor(rng.integers(0, 10, 2).astype(np.int32))
    losses = [float(step(x, y).asnumpy()) for _ in range(2)]
    assert all(np.isfinite(losses))
    path = str(tmp_path / "repopt.ckpt")
    ms.save_checkpoint(plain, path)
    stock = mindcv.create_model(model, num_classes=10, checkpoint_path=path)
    plain.set_train(False)
    stock.set_train(False)
    probe = Tensor(rng.normal(size=(1, 3, 64, 64)).astype(np.float32))
    assert np.allclose(stock(probe).asnumpy(), plain(probe).asnumpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode, level", [("pynative", "O3"), pytest.param("graph", "O2", marks=pytest.mark.graph)])
def test_the_constant_scale_form_and_the_repopt_step_train_under_mixed_precision(mode, level):
    """Both RepOpt forms through the run's train step at O2 (BNs float32) and O3 (everything float16): finite
    losses that fall on a repeated batch."""
    from mindspore import Tensor

    from acnet_ms import block_layout, create_model
    from acnet_ms.config.loader import defaults
    from acnet_ms.training.factories import build_train_step
    from acnet_ms.training.loop import train_call
    from acnet_ms.training.repopt import scales_of

    csla = create_model("src20", num_classes=10, block_type="rep", block_options={"csla": True})
    scales = scales_of({p.name: p.asnumpy() for p in csla.get_parameters()}, block_layout(csla))
    rng = np.random.default_rng(0)
    x = Tensor(rng.normal(size=(4, 3, 16, 16)).astype(np.float32))
    y = Tensor(rng.integers(0, 10, 4).astype(np.int32))
    for net, repopt in ((csla, None), (create_model("src20", num_classes=10), scales)):
        cfg = dict(defaults(), device_target="CPU", model="src20", opt="momentum", amp_level=level,
                   weight_decay=1e-4, lr=0.02, repopt_scales="search.ckpt" if repopt else None)
        step, _ = build_train_step(net, cfg, [0.02] * 4, repopt=repopt)
        losses = [float(train_call(step, x, y, True, cfg)[0].asnumpy()) for _ in range(4)]
        assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], (repopt is not None, losses)
