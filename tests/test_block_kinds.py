"""A block kind defined outside the package goes the whole way through the toolkit's command-line scripts.

The kind ("twin", tests/kinds_twin.py) is found through ``ACNET_MS_KINDS=kinds_twin`` (this folder on
``PYTHONPATH``); no library file knows it.  What every kind promises in-process (geometry, folds, gradients,
from_plain, options, AMP, MindCV families) is tests/test_kind_contract.py, which runs on twin too.
"""
import os
import subprocess
import sys

import mindcv
import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor

import kinds_twin  # noqa: F401  (registers the twin kind in this process too)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _eval_logits(net, x):
    net.set_train(False)
    return net(Tensor(x)).asnumpy()


def _kind_env(module="kinds_twin"):
    env = dict(os.environ)
    env.pop("GLOG_v", None)
    env.pop("ACNET_MS_KINDS", None)
    if module:
        env["ACNET_MS_KINDS"] = module
    env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _script(name, *args, module="kinds_twin"):
    return subprocess.run([sys.executable, os.path.join(ROOT, name), *map(str, args)], cwd=ROOT,
                          env=_kind_env(module), capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_a_kind_of_ones_own_trains_converts_and_loads_into_stock_mindcv(digits, tmp_path):
    """train.py -> checkpoint -> convert.py -> strict load into stock MindCV, logits equal; no library file
    knows the kind: ACNET_MS_KINDS names this module."""
    from acnet_ms import create_model
    from acnet_ms.io.checkpoint import read_checkpoint
    from helpers import assert_close, small_run

    save = str(tmp_path / "run")
    res = _script("train.py", *small_run(digits, save, "--model", "resnet18", "--block_type", "twin",
                                         "--block_options", "{twin_scale: 0.5}", "--image_resize", 32,
                                         "--epoch_size", 1, "--batch_size", 16, "--mode", 1))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resnet18: 17 k x k convs became twin blocks" in res.stdout
    trained = os.path.join(save, "resnet18_twin-best.ckpt")
    arrays, meta = read_checkpoint(trained)
    assert meta["block_type"] == "twin" and meta["block_options"] == {"twin_scale": 0.5}
    plain = str(tmp_path / "plain.ckpt")
    res = _script("convert.py", "--ckpt_path", trained, "--output", plain)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "folded 17 twin blocks" in res.stdout

    net = create_model("resnet18", num_classes=10, block_type="twin")
    assert ms.load_param_into_net(net, {p.name: Parameter(Tensor(arrays[p.name]), name=p.name)
                                        for p in net.get_parameters()}, strict_load=True) == ([], [])
    folded, _ = read_checkpoint(plain)
    stock = mindcv.create_model("resnet18", num_classes=10)
    assert ms.load_param_into_net(stock, {k: Parameter(Tensor(v), name=k) for k, v in folded.items()},
                                  strict_load=True) == ([], [])
    x = np.random.default_rng(1).normal(size=(2, 3, 32, 32)).astype(np.float32)
    assert_close(_eval_logits(stock, x), _eval_logits(net, x), 1e-4, "converted twin checkpoint")


@pytest.mark.slow
def test_a_kind_written_against_the_earlier_names_still_trains_and_converts(digits, tmp_path):
    """tests/kinds_twin_earlier.py imports the identities as the earlier docs said (``from acnet_ms import
    fold``): train.py loads it with a FutureWarning naming the new place, convert.py folds it, and the plain
    checkpoint strict-loads into stock MindCV.  Without ACNET_MS_KINDS, convert.py and validate.py refuse its
    checkpoint in one line naming the variable."""
    from acnet_ms.io.checkpoint import read_checkpoint
    from helpers import small_run

    save, plain = str(tmp_path / "run"), str(tmp_path / "plain.ckpt")
    res = _script("train.py", *small_run(digits, save, "--model", "resnet18", "--block_type", "twin",
                                         "--image_resize", 32, "--epoch_size", 1, "--batch_size", 16, "--mode", 1),
                  module="kinds_twin_earlier")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "kinds_twin_earlier.py:8: FutureWarning: module acnet_ms.fold has moved: its names are in " in res.stderr
    assert "acnet_ms.kinds.identities" in res.stderr
    trained = os.path.join(save, "resnet18_twin-best.ckpt")
    for script, args in (("convert.py", ("--output", plain)), ("validate.py", ("--data_dir", digits))):
        res = _script(script, "--ckpt_path", trained, *args, module=None)  # the kind's module not named
        assert res.returncode == 2 and not os.path.exists(plain), (script, res.stderr[-2000:])
        (line,) = [x for x in res.stderr.splitlines() if x.startswith("error: ")]
        assert f"{trained} records block_type 'twin', which no loaded kind provides" in line, line
        assert "name the module that registers it in ACNET_MS_KINDS" in line, line
    res = _script("convert.py", "--ckpt_path", trained, "--output", plain, module="kinds_twin_earlier")
    assert res.returncode == 0 and "folded 17 twin blocks" in res.stdout, res.stderr[-3000:]
    folded, _ = read_checkpoint(plain)
    stock = mindcv.create_model("resnet18", num_classes=10)
    assert ms.load_param_into_net(stock, {k: Parameter(Tensor(v), name=k) for k, v in folded.items()},
                                  strict_load=True) == ([], [])


def test_a_kind_module_that_does_not_import_is_one_line(digits, tmp_path):
    from helpers import small_run

    env = dict(_kind_env(), ACNET_MS_KINDS="no_such_kind_module")
    res = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"),
                          *map(str, small_run(digits, str(tmp_path / "run"), "--block_type", "twin"))],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "ACNET_MS_KINDS: cannot import block-kind module 'no_such_kind_module'" in lines[0]
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("style", ["3.10", "3.9"])
def test_kind_entry_points_are_read_on_every_python_the_package_supports(monkeypatch, style):
    """Python 3.9's ``importlib.metadata.entry_points()`` takes no ``group`` and returns a dict of groups."""
    import importlib.metadata as metadata

    from acnet_ms.kinds import table

    point = metadata.EntryPoint("mine", "my_kinds", table.ENTRY_POINT_GROUP)
    other = metadata.EntryPoint("theirs", "x", "console_scripts")

    class Selectable(list):
        def select(self, group):
            return [p for p in self if p.group == group]

    if style == "3.9":
        monkeypatch.setattr(metadata, "entry_points", lambda: {table.ENTRY_POINT_GROUP: (point,),
                                                               "console_scripts": (other,)})
    else:
        monkeypatch.setattr(metadata, "entry_points", lambda: Selectable([point, other]))
    assert table.kind_entry_points() == [point]
