"""The typed block layout (acnet_ms.reparam.layout): built from a network, written to checkpoint metadata as a
versioned schema, and read back from what every earlier version wrote (tests/fixtures/layouts: the metadata of
checkpoints written before the schema, one per kind and a non-default option set)."""
import glob
import json
import os

import numpy as np
import pytest

from acnet_ms import create_model
from acnet_ms.io.checkpoint import read_checkpoint, write_checkpoint
from acnet_ms.kinds import get_kind
from acnet_ms.models import layout_for
from acnet_ms.reparam import state as state_map
from acnet_ms.reparam.layout import SCHEMA, Block, Layout, as_layout
from acnet_ms.reparam.transform import block_layout

from helpers import ROOT, arrays_of, assert_one_line_error, randomize_bn, run_main

FIXTURES = sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", "layouts", "v1_*.json")))


def fixture(path):
    with open(path) as handle:
        return json.load(handle)


def built(meta):
    return create_model(meta["model"], num_classes=meta["num_classes"], block_type=meta["block_type"],
                        block_options=meta["block_options"])


@pytest.fixture(scope="module", params=FIXTURES, ids=lambda p: os.path.basename(p)[:-5])
def legacy(request):
    """``(metadata written by an earlier version, the network it describes)``."""
    meta = fixture(request.param)
    return meta, randomize_bn(built(meta), seed=3)


def test_the_fixtures_cover_every_kind():
    assert {fixture(p)["block_type"] for p in FIXTURES} == {"acb", "dbb", "orepa", "rep"}


def test_a_legacy_layout_reads_as_the_networks_own(legacy):
    meta, net = legacy
    old, mine = Layout.from_meta(meta["block_layout"]), block_layout(net)
    assert isinstance(mine, Layout) and set(old) == set(mine) and len(mine) == len(meta["block_layout"])
    for prefix, block in mine.items():
        assert old[prefix] == block and old[prefix].options == block.options, prefix
        assert old[prefix].geometry == block.geometry, prefix
        # the flat entry of an earlier version is the block's mapping view, unchanged; what options were added
        # since are the kind's defaults
        entry, view = meta["block_layout"][prefix], dict(block)
        assert {k: view[k] for k in entry} == entry, prefix
        kind = get_kind(block.kind)
        assert {k: view[k] for k in set(view) - set(entry)} == {
            k: kind.options[k].default for k in set(view) - set(entry)}, prefix


def test_options_are_defaulted_by_the_kind(legacy):
    meta, net = legacy
    kind = get_kind(meta["block_type"])
    for block in block_layout(net).values():
        assert set(kind.layout_options) <= set(block.options)
        given = dict({k: spec.default for k, spec in kind.options.items()}, **meta["block_options"])  # (older
        assert {k: block.options[k] for k in kind.layout_options} == \
            {k: given[k] for k in kind.layout_options}  # metadata lacks the options added since)


def test_the_schema_round_trips_in_the_networks_order(legacy):
    _, net = legacy
    layout = block_layout(net)
    meta = json.loads(json.dumps(layout.to_meta(), sort_keys=True))
    assert meta["schema"] == SCHEMA and [b["prefix"] for b in meta["blocks"]] == list(layout)
    again = Layout.from_meta(meta)
    assert list(again) == list(layout) and dict(again) == dict(layout)


def test_a_legacy_layout_folds_as_the_networks_own(legacy):
    meta, net = legacy
    arrays = arrays_of(net)
    old, _ = state_map.fold_state(arrays, meta["block_layout"])
    mine, _ = state_map.fold_state(arrays, block_layout(net))
    assert set(old) == set(mine)
    for name in mine:
        np.testing.assert_array_equal(old[name], mine[name], err_msg=name)


def test_an_older_entry_gets_its_kinds_defaults():
    """An ACB entry without the fields later versions added reads with the kind's defaults, and folds."""
    block = Block.from_info("conv1", {"kind": "acb", "slot": "bn", "bn": "bn1"})
    assert block.options == {"branches": "hv", "branch_bn": True, "position": "center"}
    assert block["has_bias"] is False and block.eps == 1e-5 and block["kind"] == "acb"
    rep = Block.from_info("c", {"kind": "rep", "slot": "none", "kernel_size": 3})
    assert rep["num_kxk"] == 1 and rep["has_scale"] is False and rep["has_identity"] is False


@pytest.mark.parametrize("key", ["block_layout", "acb_layout"])
def test_layout_for_reads_either_schema_under_either_key(key, tmp_path):
    meta = fixture(FIXTURES[0])
    v1 = meta.pop("block_layout")
    for written in (v1, Layout.from_meta(v1).to_meta()):
        layout = layout_for(meta["model"], meta["num_classes"], dict(meta, **{key: written}))
        assert isinstance(layout, Layout) and dict(layout) == dict(Layout.from_meta(v1))


def test_checkpoint_metadata_holds_the_schema(tmp_path):
    """A layout in the metadata of write_checkpoint is written as its schema (as train.py writes it)."""
    net = create_model("src20", num_classes=10, block_type="dbb")
    path = str(tmp_path / "m.ckpt")
    write_checkpoint(path, {"x": np.zeros(2, np.float32)}, dict(model="src20", block_layout=block_layout(net)))
    meta = read_checkpoint(path)[1]
    assert meta["block_layout"]["schema"] == SCHEMA
    assert dict(Layout.from_meta(meta["block_layout"])) == dict(block_layout(net))


@pytest.mark.parametrize("meta,fragment", [
    ({"schema": SCHEMA + 1, "blocks": []}, f"schema {SCHEMA + 1} is newer than this acnet_ms reads"),
    ({"schema": "2", "blocks": []}, "schema must be an integer"),
    ({"schema": 2, "blocks": {}}, "'blocks' must be a list"),
    ({"schema": 2, "blocks": [{"kind": "acb"}]}, "block 0 has no 'prefix'"),
    ({"schema": 2, "blocks": [{"prefix": "c", "kind": "acb", "slots": "bn"}]}, "block 'c': unknown layout key 'slots'"),
    ({"schema": 2, "blocks": [{"prefix": "c", "kind": "acb", "options": 3}]}, "block 'c': 'options' must be a mapping"),
    ({"schema": 2, "blocks": [{"prefix": "c", "kind": "acb"}, {"prefix": "c", "kind": "acb"}]}, "'c' is twice"),
    ({"c": {"kind": "mine"}}, "block 'c': unknown kind 'mine'"),
    ({"c": {"kind": "acb", "slot": "bn"}}, "block 'c': slot 'bn' names no BatchNorm"),
    ({"c": {"kind": "acb", "slot": "after"}}, "block 'c': slot must be one of bn, bias, none"),
    ({"c": {"slot": "bn"}}, "block 'c': the layout entry names no kind"),
    ({"c": 3}, "block 'c': a layout entry is a mapping"),
    ([1], "block_layout: expected a mapping"),
])
def test_a_bad_layout_is_refused_naming_what(meta, fragment):
    with pytest.raises(ValueError) as err:
        as_layout(meta)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_an_unknown_kind_names_where_kinds_load():
    with pytest.raises(ValueError, match="ACNET_MS_KINDS"):
        Layout.from_meta({"c": {"kind": "mine"}})


def test_convert_reads_a_legacy_checkpoint_as_a_new_one(tmp_path):
    """The same arrays under an earlier version's metadata and under the schema convert to the same stock
    checkpoint; a schema newer than the package's is one line naming the checkpoint."""
    meta = fixture([p for p in FIXTURES if "rep" in p][0])
    net = randomize_bn(built(meta), seed=5)
    arrays = arrays_of(net)
    outs = []
    for tag, layout in (("v1", meta["block_layout"]), ("v2", block_layout(net).to_meta())):
        src, dst = tmp_path / f"{tag}.ckpt", tmp_path / f"{tag}_stock.ckpt"
        write_checkpoint(str(src), arrays, dict(meta, block_layout=layout))
        res = run_main("convert.py", "--ckpt_path", src, "--output", dst)
        assert res.returncode == 0, res.stderr[-2000:]
        outs.append(read_checkpoint(str(dst))[0])
    assert set(outs[0]) == set(outs[1])
    for name in outs[0]:
        np.testing.assert_array_equal(outs[0][name], outs[1][name], err_msg=name)
    bad = tmp_path / "future.ckpt"
    write_checkpoint(str(bad), arrays, dict(meta, block_layout={"schema": SCHEMA + 1, "blocks": []}))
    res = run_main("convert.py", "--ckpt_path", bad, "--output", tmp_path / "f_stock.ckpt")
    assert_one_line_error(res, str(bad), f"schema {SCHEMA + 1} is newer")
    assert not (tmp_path / "f_stock.ckpt").exists()
