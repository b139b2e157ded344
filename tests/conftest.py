import gc
import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("GLOG_v", "3")

import mindspore as ms  # noqa: E402
from mindspore import Tensor, nn  # noqa: E402

#: the checkout: its entry scripts and configs (acnet_ms itself is imported from here too: pyproject's pythonpath)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ms.set_context(mode=ms.GRAPH_MODE)
ms.set_device("CPU")


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


def run_script(script, *args, timeout=600):
    """Run one of the entry points like a user would; returns the CompletedProcess."""
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)], cwd=ROOT,
                          env=user_env(), capture_output=True, text=True, timeout=timeout)


def assert_clean_exit(res):
    """No traceback and no finalizer noise from the interpreter's exit."""
    assert "Exception ignored" not in res.stderr, res.stderr[-2000:]
    assert "Traceback" not in res.stderr, res.stderr[-2000:]


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """scikit-learn's digits as an ImageFolder, plus small list files (16 train / 6 val images a class)."""
    from acnet_ms.demo import write_digits

    root = str(tmp_path_factory.mktemp("digits"))
    write_digits(root)
    for split, per_class in (("train", 16), ("val", 6)):
        lines = []
        for label in range(10):
            names = sorted(os.listdir(os.path.join(root, split, str(label))))[:per_class]
            lines += [f"{split}/{label}/{name} {label}" for name in names]
        with open(os.path.join(root, f"{split}_small.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return root


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


@pytest.fixture(autouse=True)
def _collect():
    yield
    gc.collect()
