import gc
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("GLOG_v", "3")

import mindspore as ms  # noqa: E402
from mindspore import Tensor, nn  # noqa: E402

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


def run_script(script, *args, timeout=600):
    """Run one of the entry points like a user would; returns the CompletedProcess."""
    env = dict(os.environ)
    env.pop("GLOG_v", None)
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


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
