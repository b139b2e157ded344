"""The papers' PyTorch checkpoints into MindCV's models: the .pth reader, the refusal of pickled code, the name
maps and folds of each source against the original's own logits (fixtures made by the originals' code:
tests/fixtures/make_pth_fixtures.py; no torch here)."""
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor

from acnet_ms.convert import foreign
from acnet_ms.io.pth import PthError, load, read_pth
from helpers import ROOT, assert_one_line_error, run_main

FIX = os.path.join(ROOT, "tests", "fixtures", "pth")
#: the reduced ResNets of the fixtures: MindCV's ResNet cell for cell, 1/16 of its width
NARROW = dict(widths=(4, 8, 16, 32), stem_width=4, num_classes=10)
RTOL = 1e-4


def fixture(name):
    return os.path.join(FIX, name)


def reference(name):
    return np.load(fixture(f"{name}.npz"))


def shapes_of(net):
    return {p.name: tuple(p.shape) for p in net.get_parameters()}


def logits(net, entries, x):
    params = {k: ms.Parameter(Tensor(v), name=k) for k, v in entries.items()}
    not_loaded, unused = ms.load_param_into_net(net, params, strict_load=True)
    assert not not_loaded and not unused, (not_loaded[:3], unused[:3])
    net.set_train(False)
    return net(Tensor(x)).asnumpy()


def rel_diff(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def resnet(block, layers, maxpool_pad="symmetric", **kw):
    from acnet_ms.models import resnet as R

    return R.ResNet(getattr(R, block), layers, maxpool_pad=maxpool_pad, **dict(NARROW, **kw))


# ---------------------------------------------------------------- the reader


@pytest.mark.parametrize("name", ["dtypes.pth", "dtypes_legacy.pth"])
def test_reader_every_dtype_view_and_layout(name):
    """Both layouts torch.save writes: every dtype (bfloat16 widened exactly), views, transposes, a shared
    storage, scalars, empty tensors, parameters; unwrapped from a checkpoint dict, module. prefixes gone."""
    state, ref = read_pth(fixture(name)), reference("dtypes")
    assert sorted(state) == sorted(ref.files)
    for key in ref.files:
        assert state[key].dtype == ref[key].dtype, key
        assert state[key].shape == ref[key].shape, key
        assert state[key].flags.aligned, key  # MindSpore 2.7 refuses an unaligned array ("Unsupported tensor type")
        np.testing.assert_array_equal(state[key], ref[key], err_msg=key)
    assert state["bfloat16"].dtype == np.float32 and state["float16"].dtype == np.float16


def _malicious_pickle(marker):
    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)
    return pickle.dumps({"weight": Payload()}, protocol=2)


@pytest.mark.parametrize("layout", ["zip", "legacy", "raw"])
def test_reader_refuses_code(tmp_path, layout):
    """A pickle that would run os.system is refused naming the global, and nothing runs."""
    marker = tmp_path / "ran"
    payload = _malicious_pickle(marker)
    path = tmp_path / "evil.pth"
    if layout == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("evil/data.pkl", payload)
            z.writestr("evil/byteorder", "little")
    elif layout == "legacy":  # the legacy layout's first pickles are plain numbers: the attack sits in its object
        path.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, 2) + pickle.dumps(1001, 2)
                         + pickle.dumps({"little_endian": True}, 2) + payload)
    else:
        path.write_bytes(payload)
    with pytest.raises(PthError) as err:
        load(str(path))
    message = str(err.value)
    assert "system" in message and ("posix" in message or "os." in message) and "\n" not in message
    assert not marker.exists()


def test_reader_refuses_unknown_class(tmp_path):
    import argparse

    path = tmp_path / "ns.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a/data.pkl", pickle.dumps({"args": argparse.Namespace(lr=0.1)}, protocol=2))
    with pytest.raises(PthError, match="refused the global 'argparse.Namespace'"):
        load(str(path))


def test_convert_refuses_code_in_one_line(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", _malicious_pickle(marker))
    out = tmp_path / "out.ckpt"
    result = run_main("convert.py", "--ckpt_path", path, "--model", "resnet18", "--output", out)
    assert_one_line_error(result, "refused the global")
    assert "evil.pth" in result.stderr
    assert not marker.exists() and not out.exists()


def test_a_truncated_pth_is_named_as_such_in_one_line(tmp_path):
    """A download cut short: a zip archive without its end record is named truncated, not read as a pickle
    (which said "unknown persistent id 'K\\x03...'"); nothing is written."""
    whole = open(os.path.join(FIX, "dbb_resnet18.pth"), "rb").read()
    path = tmp_path / "cut.pth"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(PthError, match=r"truncated or incomplete: .* \(\d+ bytes\); was its download or copy cut"):
        load(str(path))
    out = tmp_path / "out.ckpt"
    result = run_main("convert.py", "--ckpt_path", path, "--model", "resnet18", "--output", out)
    assert_one_line_error(result, "cut.pth", "truncated or incomplete")
    assert not out.exists()


# ---------------------------------------------------------------- each source against the original's logits

#: fixture -> (our ResNet's block, layers, extra options); the model built is MindCV's ResNet at 1/16 width
RESNETS = {
    "tv_resnet18": ("BasicBlock", (2, 2, 2, 2), {}),
    "tv_resnet50": ("Bottleneck", (1, 1, 1, 1), {}),
    "dbb_resnet18": ("BasicBlock", (2, 2, 2, 2), {}),
    "dbb_resnet50": ("Bottleneck", (1, 1, 1, 1), {}),
    "orepa_resnet18": ("BasicBlock", (2, 2, 2, 2), {}),
    "orepa_resnet50": ("Bottleneck", (1, 1, 1, 1), {}),
    "orepa_resnext50": ("Bottleneck", (1, 1, 1, 1), dict(groups=8, base_width=16)),
}


@pytest.mark.parametrize("name", sorted(RESNETS))
def test_resnets_equal_the_original_and_measure_the_maxpool(name):
    """Folded into MindCV's ResNet: the original's logits exactly with PyTorch's symmetric max-pool padding;
    with MindCV's own ("same": bottom/right) the same weights compute a shifted function."""
    block, layers, kw = RESNETS[name]
    state, ref = read_pth(fixture(f"{name}.pth")), reference(name)
    source = name.split("_")[0].replace("tv", "torchvision")
    exact = resnet(block, layers, **kw)
    entries, info = foreign.to_mindcv(state, shapes_of(exact), source=source)
    assert info["source"] == source
    assert rel_diff(logits(exact, entries, ref["x"]), ref["logits"]) < RTOL
    stock = resnet(block, layers, maxpool_pad="same", **kw)
    shifted = rel_diff(logits(stock, entries, ref["x"]), ref["logits"])
    assert shifted > 0.02, shifted  # measured 0.16-0.42 on these random weights (docs/pretrained.md)


def test_dbb_mobilenet_equals_the_original_in_stock_mindcv():
    from mindcv.models.mobilenetv1 import MobileNetV1

    state, ref = read_pth(fixture("dbb_mobilenet.pth")), reference("dbb_mobilenet")
    net = MobileNetV1(alpha=0.125, num_classes=10)
    entries, info = foreign.to_mindcv(state, shapes_of(net))
    assert info == dict(source="dbb", architecture="mobilenet", forms={"dbb": 14, "convbn": 13})
    assert rel_diff(logits(net, entries, ref["x"]), ref["logits"]) < RTOL


@pytest.mark.parametrize("name", ["repvgg_a0", "orepa_repvgg"])
def test_repvgg_equals_the_original_in_stock_mindcv(name):
    """RepVGG's training form is MindCV's (three branches); OREPA's RepVGG gives its generated kernel."""
    from mindcv.models.repvgg import RepVGG

    state, ref = read_pth(fixture(f"{name}.pth")), reference(name)
    net = RepVGG(num_blocks=[2, 2, 2, 1], num_classes=10, width_multiplier=[0.125] * 4)
    entries, _ = foreign.to_mindcv(state, shapes_of(net))
    assert rel_diff(logits(net, entries, ref["x"]), ref["logits"]) < RTOL


@pytest.mark.parametrize("name, build", [
    ("dbb_resnet18", lambda: resnet("BasicBlock", (2, 2, 2, 2))),
    ("orepa_resnet18", lambda: resnet("BasicBlock", (2, 2, 2, 2))),
    ("repvgg_a0", None),
])
def test_deploy_forms_equal_the_originals_conversion(name, build):
    """The originals' own deploy files (dbb_reparam, orepa_reparam/or_large_reparam, rbr_reparam) import too."""
    if build is None:
        from mindcv.models.repvgg import RepVGG

        def build():
            return RepVGG(num_blocks=[2, 2, 2, 1], num_classes=10, width_multiplier=[0.125] * 4)
    net, ref = build(), reference(name)
    entries, info = foreign.to_mindcv(read_pth(fixture(f"{name}_deploy.pth")), shapes_of(net))
    assert set(info["forms"]) == {"deploy"}
    assert rel_diff(logits(net, entries, ref["x"]), ref["deploy_logits"]) < RTOL


def test_dbb_into_our_dbb_kind_keeps_every_branch():
    """--block_type dbb: the original's DBBs load branch for branch into our dbb kind's Cells (the stem, plain in
    the original, starts as that plain conv), and compute the original's logits."""
    from acnet_ms.convert.foreign.pipeline import _kind_keeper, block_finisher
    from acnet_ms.models.factory import create_model
    from acnet_ms.reparam.transform import block_layout

    state, ref = read_pth(fixture("dbb_resnet18.pth")), reference("dbb_resnet18")
    net = create_model("sres18", block_type="dbb", maxpool_pad="symmetric", **NARROW)
    layout = block_layout(net)
    entries, info = foreign.to_mindcv(state, shapes_of(net), keep=_kind_keeper(layout),
                                      finish=block_finisher(net, layout))
    assert "layer1.0.conv1.dbb_1x1_kxk.idconv1.weight" in entries and "layer1.0.bn1.gamma" not in entries
    assert rel_diff(logits(net, entries, ref["x"]), ref["logits"]) < RTOL


# ---------------------------------------------------------------- the published models, full size


@pytest.mark.slow
@pytest.mark.parametrize("name, model", [
    ("torchvision_resnet18", "resnet18"), ("dbb_resnet18", "resnet18"), ("dbb_resnet18_deploy", "resnet18"),
    ("dbb_mobilenet", "mobilenet_v1_100"), ("orepa_resnet50", "resnet50"), ("orepa_resnext50", "resnext50_32x4d"),
    ("repvgg_a0", "repvgg_a0"), ("repvgg_a0_deploy", "repvgg_a0"), ("orepa_repvgg_a0", "repvgg_a0"),
])
def test_published_models_map_into_stock_mindcv(name, model):
    """The names and shapes of each published model (read from the original's code: manifest.json) map and
    fold into every parameter of the stock MindCV model, and nothing is left over."""
    import mindcv

    with open(fixture("manifest.json")) as f:
        manifest = json.load(f)[name]
    rng = np.random.default_rng(0)
    state = {k: (np.full(s, 1000, np.int64) if k.endswith("num_batches_tracked") else
                 rng.uniform(0.5, 1.0, s).astype(np.float32)) for k, s in manifest.items()}
    net = mindcv.create_model(model, num_classes=1000)
    entries, _ = foreign.to_mindcv(state, shapes_of(net), model=model)
    assert set(entries) == set(shapes_of(net))


def test_manifest_names_fit_in_one_line_errors():
    """A model of another architecture or size: one line naming the entry and the shapes."""
    state = read_pth(fixture("dbb_resnet18.pth"))
    big = resnet("BasicBlock", (2, 2, 2, 2), stem_width=8)
    with pytest.raises(foreign.MapError, match=r"conv1.weight' has shape \[4, 3, 7, 7\], expected \[8, 3, 7, 7\]"):
        foreign.to_mindcv(state, shapes_of(big), model="x")
    with pytest.raises(foreign.MapError, match="--source repvgg, but the entries are dbb's"):
        foreign.to_mindcv(state, shapes_of(big), source="repvgg")
    deeper = resnet("BasicBlock", (2, 2, 3, 2))
    with pytest.raises(foreign.MapError, match="layer3.2.conv1.weight"):
        foreign.to_mindcv(state, shapes_of(deeper), model="x")


# ---------------------------------------------------------------- convert.py


def test_convert_py_writes_the_stock_checkpoint(tmp_path, monkeypatch):
    """convert.py --ckpt_path X.pth --model M --output Y: the checkpoint M loads, its metadata, the original's
    logits; an existing --output is left alone, a missing --model is one line.  (The fixture is MindCV's
    ResNet-18 at 1/16 width: the model convert.py builds is narrowed the same way here.)"""
    import acnet_ms.models.factory as factory
    from acnet_ms.io.checkpoint import read_checkpoint

    monkeypatch.setattr(factory, "uninitialised_model",
                        lambda model, n, **kw: resnet("BasicBlock", (2, 2, 2, 2), maxpool_pad="same"))
    out = tmp_path / "resnet18_tv.ckpt"
    src = fixture("tv_resnet18.pth")
    result = run_main("convert.py", "--ckpt_path", src, "--model", "resnet18", "--output", out)
    assert result.returncode == 0, result.stderr
    assert "torchvision" in result.stdout and "resnet18" in result.stdout
    entries, meta = read_checkpoint(str(out))
    assert meta["model"] == "resnet18" and meta["source"] == "torchvision" and meta["num_classes"] == 10
    ref = reference("tv_resnet18")
    assert rel_diff(logits(resnet("BasicBlock", (2, 2, 2, 2)), entries, ref["x"]), ref["logits"]) < RTOL
    before = out.stat().st_mtime_ns
    again = run_main("convert.py", "--ckpt_path", src, "--model", "resnet18", "--output", out)
    assert_one_line_error(again, "exists")
    assert out.stat().st_mtime_ns == before
    assert_one_line_error(run_main("convert.py", "--ckpt_path", src, "--output", tmp_path / "b.ckpt"), "--model")
    wrong = run_main("convert.py", "--ckpt_path", src, "--model", "resnet18", "--source", "dbb",
                     "--output", tmp_path / "c.ckpt")
    assert_one_line_error(wrong, "--source dbb, but the entries are torchvision's")
    assert not (tmp_path / "b.ckpt").exists() and not (tmp_path / "c.ckpt").exists()


def test_orepa_grouped_dws_is_the_originals_not_ours():
    """OREPA's grouped depthwise-separable branch reads its pointwise rows permuted (its view of the matrix):
    the kernel the original computes differs from the natural grouping, which our kind uses; with one
    group they agree."""
    from acnet_ms.convert.foreign.originals import orepa_dws
    from acnet_ms.kinds.orepa.fold import merge_depthwise_pointwise

    rng = np.random.default_rng(0)
    c, o, g, m = 8, 8, 4, 8
    dw, pw = rng.normal(size=(m * c, 1, 3, 3)), rng.normal(size=(o, m * c // g, 1, 1))
    assert not np.allclose(orepa_dws(dw, pw, c, g), merge_depthwise_pointwise(dw, pw, c, g))
    pw1 = rng.normal(size=(o, m * c, 1, 1))
    np.testing.assert_allclose(orepa_dws(dw, pw1, c, 1), merge_depthwise_pointwise(dw, pw1, c, 1))


def test_maxpool_pad_option_is_checked():
    from acnet_ms.models import resnet as R

    with pytest.raises(ValueError, match="maxpool_pad must be one of same, symmetric"):
        R.ResNet(R.BasicBlock, (1, 1, 1, 1), maxpool_pad="torch")


def test_maxpool_pad_is_an_option_of_the_programs_and_travels_with_the_checkpoint(tmp_path, digits):
    """``--maxpool_pad symmetric`` (or ``maxpool_pad:`` in a recipe) builds our ResNets with PyTorch's padding,
    in the training form and in the fully folded one validate.py and convert.py build; a model without the
    option, or a bad value, is one line; a training checkpoint records it, and convert.py builds what it records
    and says that the stock model computes a shifted function."""
    from acnet_ms.cli import UserError
    from acnet_ms.config.loader import parse
    from acnet_ms.convert.pipeline import convert_checkpoint
    from acnet_ms.engine.runtime import build_model, recorded_model_kwargs
    from acnet_ms.io.checkpoint import write_checkpoint

    recipe = tmp_path / "run.yaml"
    recipe.write_text("model: resnet18\nnum_classes: 10\nblock_type: dbb\nmaxpool_pad: symmetric\n")
    for argv in (["--config", str(recipe)], ["--model", "resnet18", "--num_classes", "10", "--maxpool_pad",
                                             "symmetric"]):
        cfg, _ = parse(argv, "test")
        for deploy in (False, True):
            pool = build_model(cfg, deploy=deploy).max_pool
            assert pool.pad_mode == "PAD", (argv, deploy, pool)  # nn.MaxPool2d(3, 2, pad_mode="pad", padding=1)
    assert build_model(dict(cfg, maxpool_pad=None)).max_pool.pad_mode == "SAME"
    with pytest.raises(UserError, match="option 'maxpool_pad' must be one of None, same, symmetric, got 'torch'"):
        parse(["--model", "resnet18", "--maxpool_pad", "torch"], "test")
    res = run_main("train.py", "--model", "mobilenet_v2_035_96", "--maxpool_pad", "symmetric", "--data_dir", digits,
                   "--ckpt_save_dir", str(tmp_path / "never"))
    assert_one_line_error(res, "model mobilenet_v2_035_96 does not take option(s) maxpool_pad")
    assert not (tmp_path / "never").exists()
    # a training checkpoint records it; convert.py builds the folded model with it and says what stock computes
    net = build_model(cfg)
    src, dst = str(tmp_path / "train.ckpt"), str(tmp_path / "deploy.ckpt")
    write_checkpoint(src, {p.name: p.asnumpy() for p in net.get_parameters()},
                     dict(model="resnet18", block_type="base", num_classes=10, config=dict(cfg)))
    assert recorded_model_kwargs({"config": dict(cfg)}) == {"maxpool_pad": "symmetric"}
    assert recorded_model_kwargs({"config": {}}) == {} and recorded_model_kwargs(None) == {}
    lines = []
    convert_checkpoint(src, dst, fold_bn=True, log=lines.append)
    assert any("trained with maxpool_pad symmetric; stock MindCV pads its max-pool bottom and right" in line
               for line in lines), lines


def test_the_summary_line_says_the_source_its_architecture_and_each_form_in_words(tmp_path, monkeypatch):
    """convert.py's line for a .pth: the original's repository, the architecture and how many blocks of each
    form it read (a RepVGG block is one block, not a conv + BN), a ResNet in the DBB/OREPA names without a
    block of theirs a plain one; an OREPA file into the orepa kind says its blocks start as their folds."""
    import acnet_ms.models.factory as factory
    from acnet_ms.convert.pipeline import convert_pth
    from acnet_ms.io.checkpoint import read_checkpoint
    from mindcv.models.repvgg import RepVGG

    create = factory.create_model
    monkeypatch.setattr(factory, "uninitialised_model", lambda model, n, **kw: RepVGG(
        num_blocks=[2, 2, 2, 1], num_classes=n, width_multiplier=[0.125] * 4))
    monkeypatch.setattr(factory, "create_model", lambda model, num_classes, block_type: create(
        "sres18", block_type=block_type, maxpool_pad="symmetric", **NARROW))
    lines = []
    for name, model, kind in (("repvgg_a0", "repvgg_a0", None), ("orepa_repvgg", "repvgg_a0", None),
                              ("orepa_resnet18", "resnet18", "orepa")):
        convert_pth(fixture(f"{name}.pth"), str(tmp_path / f"{name}.ckpt"), model=model, block_type=kind,
                    log=lines.append)
    assert "repvgg_a0.pth: a RepVGG of DingXiaoH/RepVGG: 8 RepVGG blocks (training form) -> " in lines[0]
    assert "a RepVGG of JUGGHM/OREPA_CVPR2022: 8 RepVGG blocks with an OREPA 3x3 branch -> " in lines[1]
    assert lines[2].endswith("the original's orepa blocks are read as the convs they fold into (only DBB's load "
                             "branch for branch): each orepa block starts as its folded conv"), lines[2]
    assert ("a ResNet of JUGGHM/OREPA_CVPR2022: 16 OREPA blocks, 3 conv + BN, 1 OREPA large-kernel block -> "
            in lines[3]), lines[3]
    entries, _ = read_checkpoint(str(tmp_path / "orepa_resnet18.ckpt"))
    assert lines[3].endswith(f"resnet18 with orepa blocks, {len(entries)} parameters, 10 classes"), lines[3]
    plain = dict(source="dbb", architecture="resnet", forms={"convbn": 20})
    assert foreign.describe(plain) == "a plain ResNet in the DBB/OREPA repositories' names: 20 conv + BN"
    assert foreign.describe(dict(source="torchvision", architecture="torchvision_resnet", forms={"convbn": 20})) \
        == "a ResNet of torchvision: 20 conv + BN"


def test_a_pth_folds_and_exports_through_the_one_conversion_pipeline(tmp_path, monkeypatch):
    """convert.py on a .pth with --fold_bn --export: the importer reads it, the pipeline folds every BN and exports
    the graph, and the deploy checkpoint computes what the stock import computes; a kind's training form is not
    folded or exported (one line, nothing written).  (A registered model at the fixture's 1/16 width.)"""
    from acnet_ms import create_model
    from acnet_ms.io.checkpoint import read_checkpoint
    from acnet_ms.models import registry

    from helpers import images, load_strict

    def tiny(num_classes=10, **kwargs):
        return resnet("BasicBlock", (2, 2, 2, 2), maxpool_pad="same", **dict(kwargs, num_classes=num_classes))

    monkeypatch.setitem(registry._REGISTRY, "tiny_resnet18", registry.ModelEntry("tiny_resnet18", tiny, "resnet",
                                                                                 10, None))
    src, stock, deploy = fixture("dbb_resnet18.pth"), tmp_path / "stock.ckpt", tmp_path / "deploy.ckpt"
    assert run_main("convert.py", "--ckpt_path", src, "--model", "tiny_resnet18", "--output", stock).returncode == 0
    res = run_main("convert.py", "--ckpt_path", src, "--model", "tiny_resnet18", "--output", deploy, "--fold_bn",
                   "--export", "mindir", "--input_shape", "1,3,32,32")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "a ResNet of DingXiaoH/DiverseBranchBlock: 16 DBBs" in res.stdout, res.stdout
    assert "folded 20 BatchNorms into their convs" in res.stdout, res.stdout
    assert (tmp_path / "deploy.mindir").exists()
    arrays, meta = read_checkpoint(str(deploy))
    assert meta["deploy"] is True and meta["source"] == "dbb" and meta["model"] == "tiny_resnet18"
    x = images(1, size=32)
    want = load_strict(create_model("tiny_resnet18", num_classes=10), str(stock))(x).asnumpy()
    got = load_strict(create_model("tiny_resnet18", num_classes=10, deploy=True), arrays)(x).asnumpy()
    assert rel_diff(got, want) < RTOL
    refused = run_main("convert.py", "--ckpt_path", src, "--model", "tiny_resnet18", "--block_type", "dbb",
                       "--output", tmp_path / "t.ckpt", "--fold_bn")
    assert_one_line_error(refused, "--block_type with --fold_bn", "drop --block_type")
    assert not (tmp_path / "t.ckpt").exists()
