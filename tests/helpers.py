"""The suite's shared helpers (a library the test files import: ``from helpers import ...``); the fixtures and
hooks are tests/conftest.py's, which sets MindSpore up before any test module imports this."""
import importlib.util
import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest

os.environ.setdefault("GLOG_v", "3")
import mindspore as ms  # noqa: E402
from mindspore import Tensor, nn, ops  # noqa: E402

#: the checkout: its entry scripts and configs (acnet_ms itself is imported from here too: pyproject's pythonpath)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Grads(nn.Cell):
    """Gradients of ``net``'s loss with respect to ``weights``: ``mean(net(x) ** 2)``, or ``sum(net(x) * r)``
    when called with a second tensor ``r``."""

    def __init__(self, net, weights):
        super().__init__()
        self.net = net
        self.grad = ops.GradOperation(get_by_list=True)
        self.weights = ms.ParameterTuple(weights)

    def loss(self, x, *r):
        y = self.net(x)
        return (y * r[0]).sum() if r else (y ** 2).mean()

    def construct(self, x, *r):
        return self.grad(self.loss, self.weights)(x, *r)


class SiteNet(nn.Cell):
    """One small conv of each kind of site a block can take, at 16 x 16: a 3 x 3 conv into a BN (``conv_bn``),
    one with its own bias and ``stride`` (``conv_bias``), with ``pointwise`` a 1 x 1 conv into a BN
    (``pointwise``), and a pre-activation 3 x 3 conv with neither BN nor bias (``conv_plain``)."""

    def __init__(self, stride=2, pointwise=True):
        super().__init__()
        self.conv_bn, self.bn = nn.Conv2d(3, 8, 3, pad_mode="pad", padding=1), nn.BatchNorm2d(8)
        self.conv_bias = nn.Conv2d(8, 8, 3, stride=stride, pad_mode="pad", padding=1, has_bias=True)
        self.has_pointwise = pointwise
        if pointwise:
            self.pointwise, self.pw_bn = nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)
        self.pre_bn = nn.BatchNorm2d(8)
        self.conv_plain = nn.Conv2d(8, 8, 3, pad_mode="same")
        self.relu = nn.ReLU()
        self.head = nn.Dense(8, 10)

    def construct(self, x):
        x = self.relu(self.bn(self.conv_bn(x)))
        x = self.relu(self.conv_bias(x))
        if self.has_pointwise:
            x = self.relu(self.pw_bn(self.pointwise(x)))
        x = self.conv_plain(self.relu(self.pre_bn(x)))
        return self.head(x.mean(axis=(2, 3)))


def randomize_bn(net, seed=0):
    """Random statistics and affine parameters for every BatchNorm of ``net``."""
    rng = np.random.default_rng(seed)
    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.BatchNorm2d):
            n = cell.gamma.shape[0]
            cell.gamma.set_data(Tensor(rng.uniform(0.5, 1.5, n).astype(np.float32)))
            cell.beta.set_data(Tensor(rng.normal(0.0, 0.2, n).astype(np.float32)))
            cell.moving_mean.set_data(Tensor(rng.normal(0.0, 0.2, n).astype(np.float32)))
            cell.moving_variance.set_data(Tensor(rng.uniform(0.5, 2.0, n).astype(np.float32)))
    return net


def user_env():
    """The environment a user's shell would give: MindSpore's log level unset, the venv's tools on PATH."""
    env = dict(os.environ)
    env.pop("GLOG_v", None)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def run_script(script, *args, timeout=600, cwd=ROOT):
    """Run one of the entry points like a user would (in the checkout, or in ``cwd``); returns the CompletedProcess."""
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)], cwd=cwd,
                          env=user_env(), capture_output=True, text=True, timeout=timeout)


def run_main(script, *args, cwd=ROOT):
    """Run an entry point's ``main`` in this process as ``python script args`` would run it.

    The same CompletedProcess as :func:`run_script` (exit status, stdout,
    stderr), without the interpreter and MindSpore start-up: for the many
    error cases.  ``acnet_ms.cli.run`` turns the errors into lines and exit
    statuses, as in a real run; only what MindSpore prints from C++ is not
    seen (each entry point keeps a subprocess test for that).  The working
    folder is the checkout (or ``cwd``), as in :func:`run_script`, and MindSpore's mode and
    compile level are put back afterwards.
    """
    from acnet_ms.cli import run

    argv = [str(a) for a in args]
    main = _entry(script).main
    mode, jit = ms.get_context("mode"), ms.get_context("jit_config")
    out, err = io.StringIO(), io.StringIO()
    saved_argv, cwd = sys.argv, os.getcwd()
    sys.argv = [os.path.join(ROOT, script), *argv]  # argparse names the program after it
    os.chdir(cwd)
    try:
        with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as stop:
            run(main, argv)
    finally:
        sys.argv = saved_argv
        os.chdir(cwd)
        ms.set_context(mode=mode, jit_config=jit)
    code = stop.value.code
    return subprocess.CompletedProcess([script, *argv], 0 if code is None else code, out.getvalue(), err.getvalue())


_ENTRIES = {}


def _entry(script):
    """The module of an entry script at the checkout's root, loaded once (not as __main__)."""
    if script not in _ENTRIES:
        spec = importlib.util.spec_from_file_location(f"entry_{script[:-3]}", os.path.join(ROOT, script))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _ENTRIES[script] = module
    return _ENTRIES[script]


def stderr_of(res):
    """``res.stderr`` without the line an untested MindSpore/MindCV pair puts first (``acnet_ms.stack``), so
    that the suite's checks of what a program says hold on every stack a compatibility lane runs it on."""
    from acnet_ms.stack import warning

    line = warning()
    return res.stderr.replace(line + "\n", "", 1) if line else res.stderr


def assert_one_line_error(res, *fragments, code=2):
    """``res`` failed with status ``code`` and one line on stderr, ``error: ...`` naming every fragment."""
    assert res.returncode == code, (res.returncode, res.stdout[-1500:], res.stderr[-1500:])
    lines = [line for line in stderr_of(res).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def assert_clean_exit(res):
    """No traceback and no finalizer noise from the interpreter's exit."""
    assert "Exception ignored" not in res.stderr, res.stderr[-2000:]
    assert "Traceback" not in res.stderr, res.stderr[-2000:]


def images(seed, size=64, batch=2, channels=3):
    """A batch of standard-normal float32 images, NCHW."""
    return Tensor(np.random.default_rng(seed).normal(size=(batch, channels, size, size)).astype(np.float32))


def arrays_of(net):
    """A network's parameters as a dict of numpy arrays."""
    return {p.name: p.asnumpy() for p in net.get_parameters()}


def training_checkpoint(path, name, num_classes=10, seed=0, block_type="acb", meta=True, as_trained=False, **kwargs):
    """A model with random weights and BN statistics, saved as training saves one: with optimizer state.

    ``meta``: True records the model, block type and classes; a dict records
    those and its own entries; False records nothing.  ``as_trained``: the
    record also holds what train.py records: the ACB options and layout, the
    epoch and step.  Returns the model, in eval mode.
    """
    from acnet_ms import block_layout, create_model
    from acnet_ms.io.checkpoint import write_checkpoint

    ms.set_seed(seed)
    net = randomize_bn(create_model(name, num_classes=num_classes, block_type=block_type, **kwargs), seed=seed)
    arrays = arrays_of(net)
    arrays.update({"moments." + k: np.full_like(v, 0.5) for k, v in list(arrays.items())})
    arrays.update({"learning_rate": np.float32(0.1), "global_step": np.int32(7), "momentum": np.float32(0.9)})
    record = dict(meta if isinstance(meta, dict) else {}, model=name, block_type=block_type, num_classes=num_classes)
    if as_trained:
        record.update(gamma_init=None, acb_branches="hv", acb_branch_bn=True, acb_position="center",
                      acb_layout={p: dict(b) for p, b in block_layout(net).items()}, epoch=1, step=7)
    write_checkpoint(path, arrays, record if meta is not False else None)
    net.set_train(False)
    return net


def load_strict(net, source):
    """Load a checkpoint file (or a dict of arrays) into ``net``: every parameter, nothing left over; eval mode."""
    from acnet_ms.io.checkpoint import read_checkpoint

    arrays = read_checkpoint(source)[0] if isinstance(source, (str, os.PathLike)) else source
    params = {k: ms.Parameter(Tensor(v), name=k) for k, v in arrays.items()}
    not_loaded, unused = ms.load_param_into_net(net, params, strict_load=True)
    assert not_loaded == [] and unused == [], (not_loaded[:3], unused[:3])
    net.set_train(False)
    return net


# The suite's sample of the zoo sweep (benchmarks/sweep.py): one MindCV model per site type.  Every kind runs all of
# them with the train step in PyNative (the sweep's mode, where the zoo's AMP failures were) and the cheap ones in
# graph mode too (the recipes' mode; the dilated and deep models would compile for minutes).
SAMPLE_MODELS = {"squeezenet1_1": "BN-free", "regnet_x_200mf": "grouped", "mobilenet_v2_035_96": "depthwise",
                 "skresnet18": "dilated", "resnet50": "a deep ResNet", "resnet101": "a deep ResNet"}
#: the deep ResNet: resnet101, whose eval-mode activations overflow float32 after the step, for the kind it was
#: met with; resnet50 (half its time) for the others
SAMPLE_ONLY = {"resnet101": ("dbb",), "resnet50": ("acb", "orepa", "rep")}
SAMPLE_GRAPH = ("squeezenet1_1", "mobilenet_v2_035_96")
#: what ``make test`` runs of the sample (the BN-free model's PyNative step, where the zoo's AMP failures were
#: first met); the rest of it is in the zoo lane (marker ``zoo``: ``make test-all``)
SAMPLE_CI = ("squeezenet1_1",)
#: the sample's two parts, as a test parameter: its cheap part, then the rest in the zoo lane
SAMPLE_PARTS = [pytest.param("ci", marks=pytest.mark.slow),
                pytest.param("zoo", marks=[pytest.mark.zoo, pytest.mark.slow])]


def assert_sample_sweep(kind, tmp_path, part="ci"):
    """``benchmarks/sweep.py`` over the sample's ``part`` (``ci``: SAMPLE_CI in PyNative; ``zoo``: the other
    models in PyNative, and SAMPLE_GRAPH in graph mode), as a user runs it: each model trains one step under its
    recipe's AMP level, converts every block, strict-loads into stock MindCV and computes the block model's
    function (site by site, and its logits unless float32 overflowed or amplifies errors of the sites' size past
    1e-4)."""
    import json

    pynative = [m for m in SAMPLE_MODELS if kind in SAMPLE_ONLY.get(m, (kind,))]
    lanes = {"ci": ((1, [m for m in pynative if m in SAMPLE_CI]),),
             "zoo": ((1, [m for m in pynative if m not in SAMPLE_CI]), (0, list(SAMPLE_GRAPH)))}
    for mode, models in lanes[part]:
        jsonl = tmp_path / f"sample_{mode}.jsonl"
        res = run_script("benchmarks/sweep.py", "--block_type", kind, "--mode", mode, "--models", ",".join(models),
                         "--jsonl", jsonl, "--out", tmp_path / f"sample_{mode}.md", "--mem_gb", 8, timeout=1800)
        assert res.returncode == 0, res.stderr[-2000:]
        records = {r["model"]: r for r in map(json.loads, jsonl.read_text().splitlines())}
        assert sorted(records) == sorted(models)
        for name, rec in records.items():
            what = f"{kind} {SAMPLE_MODELS[name]} {name} mode {mode}"
            assert rec["status"] == "ok" and rec["mode"] == mode, (what, rec["status"], rec["errors"])
            assert rec["blocks"] > 0 and rec["converted_blocks"] == rec["blocks"], what
            assert rec["sites_rel_err"] <= 1e-4, (what, rec["sites_rel_err"])
            amplified = rec.get("rounding_rel") is not None and rec["logits_rel_err"] <= 10 * rec["rounding_rel"]
            assert rec["logits_rel_err"] <= 1e-4 or rec.get("overflow_at") or amplified, (what, rec["logits_rel_err"])


def slow_except(values, *kept):
    """Parameter values for a sweep: those in ``kept`` run in the fast lane, the others are marked slow."""
    return [v if v in kept else pytest.param(v, marks=pytest.mark.slow) for v in values]


def small_run(digits, save_dir, *extra):
    """train.py arguments for a short run of the demo recipe on the small lists."""
    return ["--config", os.path.join(ROOT, "configs", "demo_digits.yaml"), "--data_dir", digits,
            "--train_list", "train_small.txt", "--val_list", "val_small.txt", "--ckpt_save_dir", save_dir,
            "--num_parallel_workers", 1, "--log_interval", 1, *extra]


def assert_close(actual, expected, tol, what=""):
    """max |a - e| <= tol * max(1, max |e|)  (a scale-aware float32 tolerance)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    scale = max(1.0, float(np.abs(expected).max()))
    err = float(np.abs(actual - expected).max())
    assert err <= tol * scale, f"{what}: max abs error {err:.3g} > {tol:.1g} x {scale:.3g}"


def bn_cells(cell):
    return [c for _, c in cell.cells_and_names() if isinstance(c, nn.BatchNorm2d)]


def randomize_block(block, seed=0, damp=False):
    """Random values for every parameter of a block: BN statistics and affine parameters, and every other
    parameter moved by noise of its own scale (a branch that starts at zero counts too).  ``damp``: divide
    the branch BNs' gamma and beta by their number, so that a deep network of blocks keeps one branch's gain."""
    randomize_bn(block, seed)
    rng = np.random.default_rng(seed + 1)
    owned = set()
    for norm in bn_cells(block):
        owned.update(id(p) for p in norm.get_parameters())
        if damp and len(bn_cells(block)) > 1:
            for field in ("gamma", "beta"):
                p = getattr(norm, field)
                p.set_data(Tensor(p.asnumpy() / len(bn_cells(block))))
    for param in block.trainable_params():
        if id(param) not in owned:
            w = param.asnumpy()
            scale = float(np.abs(w).mean()) or 0.1
            param.set_data(Tensor((w + rng.normal(0, 0.5 * scale, w.shape)).astype(w.dtype)))
    return block
