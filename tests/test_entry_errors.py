"""Errors every entry point reports the same way: a block-kind module that does not import, and a checkpoint
that does not say its model."""
import numpy as np
import pytest
from helpers import assert_one_line_error, run_main

from acnet_ms.kinds import table as kind_table

SCRIPTS = ["train.py", "validate.py", "convert.py", "analyze.py"]


@pytest.fixture
def kinds_env(monkeypatch):
    """Set ``ACNET_MS_KINDS`` for this test, the table's modules loaded anew (and as before afterwards)."""
    monkeypatch.setattr(kind_table, "_PLUGINS_LOADED", False)

    def use(value):
        monkeypatch.setenv(kind_table.ENV_VAR, value)
    return use


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_kind_module_that_does_not_exist_is_one_line_from_every_entry_point(script, kinds_env, tmp_path):
    kinds_env("no_such_kind_module")
    args = {"analyze.py": ["magnitude", "--ckpt_path", tmp_path / "a.ckpt"],
            "convert.py": ["--ckpt_path", tmp_path / "a.ckpt", "--output", tmp_path / "b.ckpt"]}
    res = run_main(script, *args.get(script, ["--ckpt_path", tmp_path / "a.ckpt"]))
    assert_one_line_error(res, "ACNET_MS_KINDS: cannot import block-kind module 'no_such_kind_module' "
                               "(No module named 'no_such_kind_module')")
    assert list(tmp_path.iterdir()) == []


def test_a_kind_module_that_fails_on_import_is_one_line_naming_its_error(kinds_env, tmp_path, monkeypatch):
    (tmp_path / "broken_kind_module.py").write_text("raise RuntimeError('no GPU here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    kinds_env("broken_kind_module")
    res = run_main("convert.py", "--ckpt_path", tmp_path / "a.ckpt", "--output", tmp_path / "b.ckpt")
    assert_one_line_error(res, "ACNET_MS_KINDS: cannot import block-kind module 'broken_kind_module' "
                               "(RuntimeError: no GPU here)")
    with pytest.raises(kind_table.KindImportError):  # a library call says it too, every time
        kind_table.kind_names()


@pytest.mark.parametrize("script", ["convert.py", "validate.py"])
def test_a_checkpoint_without_its_model_names_the_closest_models_not_all(script, tmp_path):
    from acnet_ms.io.checkpoint import write_checkpoint

    path = tmp_path / "sres18-best.ckpt"
    write_checkpoint(str(path), {"conv1.weight": np.zeros((4, 3, 3, 3), np.float32)})
    extra = ["--output", tmp_path / "out.ckpt"] if script == "convert.py" else []
    res = run_main(script, "--ckpt_path", path, *extra)
    line = assert_one_line_error(res, "does not record its model; pass --model NAME",
                                 "closest to the file's name: sres18", "python -m acnet_ms.models lists all")
    assert len(line) < 400 and "resnext" not in line


def test_python_m_acnet_ms_models_lists_every_model(capsys):
    from acnet_ms.models import list_models
    from acnet_ms.models.__main__ import main

    assert main([]) == 0
    names = capsys.readouterr().out.split()
    assert names == list_models() and {"src20", "resnet18", "repvgg_a0"} <= set(names)
    assert main(["--bogus"]) == 2
