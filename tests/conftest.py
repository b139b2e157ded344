import gc
import importlib.util
import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest

os.environ.setdefault("GLOG_v", "3")
#: under pytest-xdist (``pytest -n 2``), the worker's name ("gw0", ...); "" in a serial run
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
# MindSpore's graph dumps (MS_DEV_SAVE_GRAPHS) go to a temporary folder, as the entry points' do
# (acnet_ms.cli.quiet_mindspore), one per xdist worker (the entry scripts a worker runs inherit it), so that two
# processes never write the same dump.  (MindSpore 2.8 writes the analyze_fail.ir of a graph that does not
# compile under ./rank_0/om/ whatever this says: git ignores rank_*/.)
os.environ.setdefault("MS_DEV_SAVE_GRAPHS_PATH", os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                              "acnet_ms-graphs" + (f"-{WORKER}" if WORKER else "")))

import mindspore as ms  # noqa: E402

from helpers import ROOT, run_script, small_run  # noqa: E402  (the shared helpers: tests/helpers.py)


# PyNative by default: most tests run a few forward passes of small Cells, for which compiling a graph costs more
# than running it; a test about graph mode says so with @pytest.mark.graph (see _mode below)
ms.set_context(mode=ms.PYNATIVE_MODE)
ms.set_device("CPU")
# one CPU kernel thread per process (MindSpore's default is 25): three test workers and the entry scripts they
# start (which inherit the variable) share two cores; idle kernel threads spinning cost them about a seventh
os.environ.setdefault("ACNET_MS_CPU_THREADS", "1")
from acnet_ms.engine.runtime import set_cpu_threads  # noqa: E402

set_cpu_threads()


@pytest.fixture(autouse=True)
def _mode(request):
    """GRAPH mode for a test marked ``graph``, PyNative otherwise; the mode is put back after every test (a test
    may switch it itself)."""
    ms.set_context(mode=ms.GRAPH_MODE if request.node.get_closest_marker("graph") else ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)



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


@pytest.fixture(scope="session")
def trained_run(digits, tmp_path_factory):
    """train.py: two epochs of the demo recipe (ACB src20) with validation, keeping one epoch checkpoint.

    (its folder, the CompletedProcess); run once for every test file that reads it, which must not write there.
    """
    save = str(tmp_path_factory.mktemp("run"))
    res = run_script("train.py", *small_run(digits, save, "--epoch_size", 2, "--keep_checkpoint_max", 1))
    assert res.returncode == 0, res.stderr[-3000:]
    return save, res




#: the test files that take longest (measured), run first: pytest-xdist's
#: ``--dist loadfile`` hands files to the workers in collection order, so the long ones do not end the run on
#: one worker while the others idle.  Files not listed follow in name order.
LONGEST_FIRST = ("test_train.py", "test_kind_contract.py", "test_distributed.py", "test_orepa.py", "test_dbb.py",
                 "test_acb.py", "test_rep.py", "test_sknet.py",
                 "test_analysis.py", "test_quantize.py", "test_mindcv_families.py", "test_deploy.py",
                 "test_optimizers_amp.py", "test_mindcv_options.py", "test_mindcv_repvgg.py", "test_transform.py",
                 "test_packaging.py", "test_recipes.py", "test_convert.py", "test_block_kinds.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: name order within a rank


def pytest_collection_finish(session):
    """What is imported by now (MindSpore, MindCV, the test modules: most of the heap) lives for the whole
    session: keep the collector from walking it again after every test (_collect), which cost a few tenths
    of a second a test."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _collect():
    yield
    gc.collect()
