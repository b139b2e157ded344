"""The package's shape: its public API, the layering of checkpoint I/O, short functions, and MindCV's RepVGG
blocks as a native kind of the kind table."""
import ast
import glob
import os
import subprocess
import sys
import warnings

import pytest
from helpers import ROOT

import acnet_ms

API = {"create_model", "list_models", "register_kind", "get_kind", "kind_names", "BlockKind", "KindOption",
       "ACBlock", "DiverseBranchBlock", "OREPABlock", "RepBlock", "switch_to_deploy", "fold_state",
       "convert_checkpoint", "read_checkpoint", "write_checkpoint", "summary_line", "BuildRecord",
       "block_summary", "block_layout"}

#: no function of the package is longer than this (lines, decorators excluded)
MAX_FUNCTION_LINES = 80


def test_the_public_api_is_complete_and_every_name_resolves():
    from mindspore import nn

    assert set(acnet_ms.__all__) == API
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of them is deprecated
        values = {name: getattr(acnet_ms, name) for name in acnet_ms.__all__}
    for cell in ("ACBlock", "DiverseBranchBlock", "OREPABlock", "RepBlock"):
        assert issubclass(values[cell], nn.Cell), cell
    assert set(values["kind_names"]()) >= {"acb", "dbb", "orepa", "rep"}
    assert isinstance(values["get_kind"]("acb"), values["BlockKind"])
    from acnet_ms.convert.pipeline import convert_checkpoint
    from acnet_ms.io.checkpoint import read_checkpoint

    assert values["convert_checkpoint"] is convert_checkpoint and values["read_checkpoint"] is read_checkpoint


@pytest.mark.parametrize("old,new", [("acb_summary", "block_summary"), ("acb_layout", "block_layout"),
                                     ("block_types", None)])
def test_old_names_still_work_with_a_deprecation_warning_and_leave_all(old, new):
    assert old not in acnet_ms.__all__
    with pytest.warns(DeprecationWarning, match=f"acnet_ms.{old} is deprecated"):
        value = getattr(acnet_ms, old)
    if new:
        assert value is getattr(acnet_ms, new)
    else:
        assert value() == ["base"] + acnet_ms.kind_names()
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        acnet_ms.no_such_name  # noqa: B018


def test_analysis_exports_no_private_name():
    import acnet_ms.analysis as analysis

    assert not [n for n in analysis.__all__ if n.startswith("_")]
    assert all(hasattr(analysis, n) for n in analysis.__all__)


def test_checkpoint_io_imports_nothing_above_it_and_no_mindspore():
    """Reading a checkpoint needs acnet_ms.cli and numpy only (and the table of moved names, which imports
    nothing): not the models, the transforms, the kinds or MindSpore."""
    code = ("import sys, acnet_ms.io.checkpoint as c\n"
            "print(sorted(m for m in sys.modules if m.startswith('acnet_ms')))\n"
            "print('mindspore' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    modules, mindspore = res.stdout.strip().splitlines()
    assert eval(modules) == ["acnet_ms", "acnet_ms._moved", "acnet_ms.cli", "acnet_ms.io", "acnet_ms.io.checkpoint"]
    assert mindspore == "False"


def long_functions(limit):
    out = []
    for path in glob.glob(os.path.join(ROOT, "acnet_ms", "**", "*.py"), recursive=True):
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    out.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    return out


def test_no_function_of_the_package_is_longer_than_a_screen():
    assert long_functions(MAX_FUNCTION_LINES) == []
    assert long_functions(20), "the check finds long functions"  # it does look


def test_convert_checkpoint_takes_an_options_object_or_its_fields():
    from acnet_ms.convert.pipeline import ConvertOptions

    opts = ConvertOptions.of(ConvertOptions(model="src20", fold_bn=True), num_classes=7)
    assert (opts.model, opts.fold_bn, opts.num_classes, opts.fallback) == ("src20", True, 7, {})
    with pytest.raises(TypeError, match="unexpected keyword argument 'fold_bns'"):
        ConvertOptions.of(None, fold_bns=True)


# ---------------------------------------------------------------- MindCV's RepVGG: a native kind

def test_repvgg_is_a_native_kind_found_by_the_table_but_no_block_type():
    from acnet_ms import kinds
    from acnet_ms.reparam.transform import ConvSite

    kind = kinds.get_kind("repvgg")
    assert kind.native and kinds.kind_names(native=True) == ["repvgg"]
    assert "repvgg" not in kinds.kind_names() and "repvgg" not in kinds.block_types()
    for k in ((3, 3), (1, 1), (5, 5)):  # its site rule takes no plain conv
        assert kind.eligible(ConvSite(kernel=k, has_bias=False, calls=1), {}) is False
    with pytest.raises(ValueError, match=r"block_type must be one of base, acb.*got 'repvgg'.*a model's own"):
        kinds.check_block("repvgg")


def test_repvgg_cannot_be_chosen_for_another_model():
    from acnet_ms import create_model
    from acnet_ms.cli import UserError
    from acnet_ms.config import loader as config

    with pytest.raises(ValueError, match="got 'repvgg'"):
        create_model("src20", block_type="repvgg")
    with pytest.raises(UserError, match="option 'block_type' must be one of .*got 'repvgg'"):
        config.parse(["--model", "src20", "--block_type", "repvgg"], "test")


def test_the_checkpoint_layer_finds_and_folds_repvgg_blocks_through_the_table():
    """A RepVGG block's entries are found as the native kind's (its optimizer copies are not blocks), and
    fold_state writes its deploy conv, with the incomplete-block error every kind gives."""
    import numpy as np

    from acnet_ms.kinds import identities
    from acnet_ms.reparam import state as state_map

    rng = np.random.default_rng(0)
    c, p = 4, "stage1.0"
    bn = {f: rng.uniform(0.5, 1.5, c).astype(np.float32) for f in identities.BN_FIELDS}
    state = {f"{p}.rbr_dense.0.weight": rng.normal(size=(c, c, 3, 3)).astype(np.float32),
             f"{p}.rbr_1x1.0.weight": rng.normal(size=(c, c, 1, 1)).astype(np.float32)}
    for branch in ("rbr_dense.1", "rbr_1x1.1", "rbr_identity"):
        state.update({f"{p}.{branch}.{f}": v for f, v in bn.items()})
    state[f"moments.{p}.rbr_1x1.0.weight"] = np.zeros((c, c, 1, 1), np.float32)
    assert state_map.find_blocks(state, native=True) == {p: "repvgg"} and state_map.find_blocks(state) == {}
    info = dict(kind="repvgg", slot="bias", bn=None, in_channels=c, groups=1, kernel=3, identity=True, eps={})
    folded, names = state_map.fold_state(state, {p: info})
    assert names == [p] and sorted(folded) == [f"{p}.rbr_reparam.bias", f"{p}.rbr_reparam.weight"]
    del state[f"{p}.rbr_identity.beta"]
    with pytest.raises(ValueError, match=f"RepVGG block '{p}' is incomplete: '{p}.rbr_identity.beta' is missing"):
        state_map.check_blocks(state, {p: info})
