"""Selective Kernel blocks and SK-ResNets: ACB paths fold exactly; base forms match MindCV's."""
import json
import os

import numpy as np
import pytest
from helpers import (arrays_of, assert_clean_exit, assert_close, images, load_strict, randomize_bn, run_script,
                     slow_except, small_run, stderr_of, training_checkpoint)

import mindspore as ms
from mindspore import nn

from acnet_ms import block_layout, create_model, list_models, model_entry, switch_to_deploy
from acnet_ms.reparam import state as state_map
from acnet_ms.reparam.transform import to_blocks, trace
from acnet_ms.io.checkpoint import read_checkpoint
from acnet_ms.kinds.acb.cell import ACBlock
from acnet_ms.layers import SelectiveKernel
from acnet_ms.layers.selective_kernel import attn_channels_for
from acnet_ms.models.resnet import ResNet
from acnet_ms.models.sknet import SKBottleneck

SK_MODELS = ["skresnet18", "skresnet34", "skresnet50_relu", "sknet50"]
#: ACBs per model: basic blocks have two SK paths + conv2, bottlenecks two SK paths
ACB_COUNT = {"skresnet18": 8 * 3, "skresnet34": 16 * 3, "skresnet50_relu": 16 * 2, "sknet50": 16 * 2}
#: MindCV's model of the same structure as ours (names and shapes; sknet50 is grouped, MindCV's not)
MINDCV_OF = {"skresnet18": "skresnet18", "skresnet34": "skresnet34", "skresnet50_relu": "skresnet50",
             "sknet50": "skresnext50_32x4d"}
BLOCK_TOL = 2e-5  # one block in float32, relative to the largest output
TOL = 1e-4        # a whole network in float32, relative to the largest logit


def shapes(net):
    return {p.name: tuple(p.shape) for p in net.get_parameters()}


# ---------------------------------------------------------------- the layer

@pytest.mark.parametrize("stride,split,groups", [(1, True, 1), (2, True, 1), (1, False, 4), (2, False, 1)])
def test_acb_sk_block_equals_its_folded_forms(stride, split, groups):
    kwargs = dict(stride=stride, split_input=split, groups=groups, rd_ratio=1 / 4, rd_divisor=8)
    ms.set_seed(stride * 10 + groups)
    sk = SelectiveKernel(16, 24, **kwargs)
    sk = randomize_bn(to_blocks(sk, trace(sk, (1, 16, 13, 13)), "acb"), seed=stride + 2 * split)
    sk.set_train(False)
    # paths are ACBs with their own dilation (3x3 and 3x3 dilated 2 = 5x5), BN slots are identities
    assert [(type(p.features[0]), p.features[0].dilation, p.features[0].stride, p.features[0].groups)
            for p in sk.paths] == [(ACBlock, (1, 1), (stride,) * 2, groups), (ACBlock, (2, 2), (stride,) * 2, groups)]
    assert all(isinstance(p.features[1], nn.Identity) for p in sk.paths)
    assert all(p.features[0].in_channels == (8 if split else 16) for p in sk.paths)

    x = images(stride, size=13, channels=16)  # odd size: stride-2 windows must still line up
    y = sk(x).asnumpy()
    assert y.shape == (2, 24, 13 if stride == 1 else 7, 13 if stride == 1 else 7)
    assert np.abs(y).max() > 0.1  # not a degenerate (all-zero) output

    # the converter's path: fold the state dict, load it into the plain block
    plain_state, acbs = state_map.fold_state(arrays_of(sk), block_layout(sk))
    assert sorted(acbs) == ["paths.0.features.0", "paths.1.features.0"]
    base = load_strict(SelectiveKernel(16, 24, **kwargs), plain_state)
    assert_close(base(x).asnumpy(), y, BLOCK_TOL, "folded checkpoint vs ACB")

    # the in-memory path
    switch_to_deploy(sk)
    assert all(p.features[0].deploy for p in sk.paths)
    assert_close(sk(x).asnumpy(), y, BLOCK_TOL, "switch_to_deploy vs ACB")


def test_attention_width_is_mindcvs_make_divisible():
    from mindcv.models.helpers import make_divisible

    for divisor in (8, 16, 32):
        for ratio in (1 / 4, 1 / 8, 1 / 16):
            for channels in range(1, 2049):
                assert attn_channels_for(channels, ratio, divisor) == make_divisible(channels * ratio, divisor), \
                    (channels, ratio, divisor)
    # nearest multiple, not rounded up
    assert attn_channels_for(34, 1.0, 16) == 32 and attn_channels_for(40, 1.0, 16) == 48
    assert SelectiveKernel(512, rd_ratio=1 / 8, rd_divisor=16).attn.fc_reduce.weight.shape == (64, 512, 1, 1)


@pytest.mark.parametrize("kwargs,message", [
    (dict(in_channels=63, out_channels=64),
     r"split_input needs in_channels \(63\) divisible by the number of paths \(2\)"),
    (dict(in_channels=48, kernel_size=[3, 5, 7]), None),  # 48 / 3 paths is fine
    (dict(in_channels=64, kernel_size=[3, 5, 7]), r"in_channels \(64\) divisible by the number of paths \(3\)"),
    (dict(in_channels=64, kernel_size=[3, 4]), r"odd integer >= 3, got \[3, 4\]"),
    (dict(in_channels=64, kernel_size=2), r"odd integer >= 3, got \[2, 2\]"),
    (dict(in_channels=64, kernel_size=1), r"odd integer >= 3"),
    (dict(in_channels=64, kernel_size=[]), "at least one path"),
    (dict(in_channels=64, groups=3), r"groups=3 must divide each path's input channels \(32\)"),
    (dict(in_channels=64, groups=64), r"groups=64 must divide each path's input channels \(32\)"),
    (dict(in_channels=64, out_channels=60, groups=8, split_input=False), r"and out_channels \(60\)"),
    (dict(in_channels=64, stride=0), "stride must be a positive integer"),
    (dict(in_channels=64, dilation=0), "dilation must be a positive integer"),
    (dict(in_channels=0), "in_channels must be a positive integer"),
    (dict(in_channels=64, rd_ratio=0), "rd_ratio must be a positive number"),
    (dict(in_channels=64, rd_divisor=0), "rd_divisor must be a positive integer"),
    (dict(in_channels=64, rd_channels=0), "rd_channels must be a positive integer"),
])
def test_bad_sk_arguments_are_value_errors_at_construction(kwargs, message):
    if message is None:
        assert SelectiveKernel(**kwargs).num_paths == 3
        return
    with pytest.raises(ValueError, match=message):
        SelectiveKernel(**kwargs)


def test_unknown_model_lists_the_known_ones():
    assert set(SK_MODELS) <= set(list_models())
    with pytest.raises(ValueError, match="unknown model 'skresnet'.*did you mean .*skresnet18"):
        create_model("skresnet")


# ---------------------------------------------------------------- names and shapes against MindCV

@pytest.mark.parametrize("name", ["skresnet18", "skresnet34", "skresnet50_relu"])
def test_base_model_has_mindcvs_names_and_shapes(name):
    import mindcv

    ours = shapes(create_model(name, num_classes=17))
    theirs = shapes(mindcv.create_model(MINDCV_OF[name], num_classes=17))
    assert list(ours) == list(theirs)  # same names in the same order
    assert ours == theirs


def expected_grouped_shape(name, shape):
    """Our sknet50 shape of a MindCV skresnext50_32x4d parameter (width 64 -> 32 groups x 4)."""
    if not name.startswith("layer") or ".down_sample." in name:
        return shape
    stage = int(name[len("layer")])
    c = 64 * 2 ** (stage - 1)  # MindCV's block width (groups=1, base width 64); ours is 2c in 32 groups
    attn = {1: 32, 2: 32, 3: 32, 4: 64}[stage]  # make_divisible(2c / 16, 32)
    if ".conv1.0.weight" in name:
        return (2 * c,) + shape[1:]
    if ".conv1.1." in name or ".features.1." in name:
        return (2 * c,)
    if ".features.0.weight" in name:
        return (2 * c, 2 * c // 32, 3, 3)
    if ".attn.fc_reduce.weight" in name:
        return (attn, 2 * c, 1, 1)
    if ".attn.bn." in name:
        return (attn,)
    if ".attn.fc_select.weight" in name:
        return (4 * c, attn, 1, 1)
    if ".conv3.0.weight" in name:
        return (shape[0], 2 * c, 1, 1)
    return shape


@pytest.mark.slow
def test_sknet50_differs_from_mindcvs_skresnext50_32x4d_exactly_by_the_grouping():
    import mindcv

    theirs = shapes(mindcv.create_model("skresnext50_32x4d", num_classes=17))
    ours = shapes(create_model("sknet50", num_classes=17))
    assert list(ours) == list(theirs)
    assert ours == {k: expected_grouped_shape(k, v) for k, v in theirs.items()}
    differing = {k for k in ours if ours[k] != theirs[k]}
    assert "layer1.0.conv2.paths.1.features.0.weight" in differing  # (128, 4, 3, 3) vs (64, 64, 3, 3)
    assert ours["layer1.0.conv2.paths.1.features.0.weight"] == (128, 4, 3, 3)
    assert not any(".down_sample." in k or k.startswith(("conv1.", "bn1.", "classifier.")) for k in differing)
    assert {k.split(".")[0] for k in differing} == {"layer1", "layer2", "layer3", "layer4"}
    # MindCV builds the grouped network only when asked to explicitly: then its names and shapes are ours
    asked = shapes(mindcv.create_model("skresnext50_32x4d", num_classes=17, groups=32, base_width=4))
    assert asked == ours and list(asked) == list(ours)
    # MindCV's structure, written with our blocks without grouping: the same names and shapes
    ungrouped = ResNet(SKBottleneck, (3, 4, 6, 3), num_classes=17,
                       block_kwargs=dict(sk_kwargs=dict(rd_ratio=1 / 16, rd_divisor=32, split_input=False)))
    assert shapes(ungrouped) == theirs and list(shapes(ungrouped)) == list(theirs)


# ---------------------------------------------------------------- ACB placement and checkpoint folding

@pytest.mark.parametrize("name", slow_except(SK_MODELS, "skresnet18"))
def test_acbs_sit_in_every_kxk_slot_and_fold_to_the_base_names(name):
    base = create_model(name, num_classes=10)
    acb = create_model(name, num_classes=10, block_type="acb")
    acb_cells = dict(acb.cells_and_names())
    n_acb = 0
    for cname, conv in base.cells_and_names():
        if not isinstance(conv, nn.Conv2d):
            continue
        target = acb_cells[cname]
        if 1 < conv.kernel_size[0] < 7:
            assert isinstance(target, ACBlock), cname
            padding = conv.padding if isinstance(conv.padding, tuple) else (conv.padding,) * 4
            assert (target.kernel_size, target.stride, target.dilation, target.groups, target.padding) == \
                (conv.kernel_size[0], tuple(conv.stride[-2:]), tuple(conv.dilation[-2:]), conv.group,
                 padding), cname
            assert isinstance(acb_cells[acb.acnet.blocks[cname]["bn_cell"]], nn.Identity), cname
            n_acb += 1
        else:  # stem, 1x1 convs, attention convs
            assert type(target) is nn.Conv2d and target.kernel_size == conv.kernel_size, cname
    assert n_acb == ACB_COUNT[name] == sum(isinstance(c, ACBlock) for c in acb_cells.values())
    dilations = sorted({c.dilation for c in acb_cells.values() if isinstance(c, ACBlock)})
    assert dilations == [(1, 1), (2, 2)]

    plain, folded = state_map.fold_state(arrays_of(acb), block_layout(acb))
    assert len(folded) == ACB_COUNT[name]
    expected = shapes(base)
    assert {k: tuple(v.shape) for k, v in plain.items()} == expected


# ---------------------------------------------------------------- whole networks

@pytest.mark.parametrize("name", slow_except(["skresnet18", "skresnet34"], "skresnet18"))
def test_base_model_equals_mindcv_with_shared_weights(name):
    import mindcv

    ms.set_seed(3)
    ours = randomize_bn(create_model(name, num_classes=5), seed=3)
    ours.set_train(False)
    theirs = load_strict(mindcv.create_model(name, num_classes=5), arrays_of(ours))
    x = images(0, size=64 if name == "skresnet18" else 32)
    logits = ours(x).asnumpy()
    assert np.abs(logits).max() > 0.1
    assert_close(theirs(x).asnumpy(), logits, 1e-6, "MindCV vs base")


@pytest.mark.slow
def test_skresnet50_relu_differs_from_mindcvs_skresnet50_only_by_the_relu_after_conv1():
    import mindcv

    ms.set_seed(4)
    ours = randomize_bn(create_model("skresnet50_relu", num_classes=5), seed=4)
    ours.set_train(False)
    state = arrays_of(ours)
    theirs = load_strict(mindcv.create_model("skresnet50", num_classes=5), state)
    no_act1 = create_model("skresnet50_relu", num_classes=5)
    for _, cell in no_act1.cells_and_names():
        if isinstance(cell, SKBottleneck):
            cell.act1 = nn.Identity()
    load_strict(no_act1, state)
    x = images(1)
    ref = theirs(x).asnumpy()
    assert_close(no_act1(x).asnumpy(), ref, 1e-6, "MindCV vs ours without the ReLU")
    err = np.abs(ours(x).asnumpy() - ref).max()
    assert err > 1e-2 * max(1.0, np.abs(ref).max()), err  # the ReLU does change the function


@pytest.mark.slow
def test_ungrouped_skresnext_without_relu_after_conv1_is_mindcvs_skresnext50_32x4d():
    """MindCV's skresnext50_32x4d (no input split, attention 1/16 in 32s) is our SK bottleneck
    with groups=1, base width 64 and no ReLU after conv1."""
    import mindcv

    ms.set_seed(6)
    ours = ResNet(SKBottleneck, (3, 4, 6, 3), num_classes=5,
                  block_kwargs=dict(sk_kwargs=dict(rd_ratio=1 / 16, rd_divisor=32, split_input=False)))
    for _, cell in ours.cells_and_names():
        if isinstance(cell, SKBottleneck):
            cell.act1 = nn.Identity()
    randomize_bn(ours, seed=6).set_train(False)
    theirs = load_strict(mindcv.create_model("skresnext50_32x4d", num_classes=5), arrays_of(ours))
    x = images(3, size=32)
    logits = ours(x).asnumpy()
    assert np.abs(logits).max() > 0.1
    assert_close(theirs(x).asnumpy(), logits, 1e-6, "MindCV vs ours ungrouped")


@pytest.mark.slow
def test_grouped_sknet50_acb_folds_into_the_base_model():
    ms.set_seed(7)
    acb = randomize_bn(create_model("sknet50", num_classes=10, block_type="acb"), seed=7)
    acb.set_train(False)
    plain, folded = state_map.fold_state(arrays_of(acb), block_layout(acb))
    assert len(folded) == 32
    base = load_strict(create_model("sknet50", num_classes=10), plain)
    x = images(4, size=32)
    acb_logits = acb(x).asnumpy()
    assert np.abs(acb_logits).max() > 0.1
    assert_close(base(x).asnumpy(), acb_logits, TOL, "grouped base vs ACB")


@pytest.mark.slow
def test_skresnet18_acb_converts_into_our_base_model_and_mindcvs(tmp_path):
    import mindcv

    src, out = str(tmp_path / "acb.ckpt"), str(tmp_path / "deploy.ckpt")
    acb = training_checkpoint(src, "skresnet18", 10, seed=5)
    x = images(2)
    acb_logits = acb(x).asnumpy()
    assert np.abs(acb_logits).max() > 0.1

    res = run_script("convert.py", "--ckpt_path", src, "--output", out)
    assert res.returncode == 0, res.stderr
    assert "skresnet18: folded 24 ACBs" in res.stdout  # 8 blocks x (2 SK paths + conv2)
    assert stderr_of(res).strip() == "", res.stderr

    state, meta = read_checkpoint(out)
    assert meta["model"] == "skresnet18" and meta["block_type"] == "base" and meta["num_classes"] == 10
    base = load_strict(create_model("skresnet18", num_classes=10), state)
    base_logits = base(x).asnumpy()
    assert_close(base_logits, acb_logits, TOL, "base vs ACB")
    theirs = load_strict(mindcv.create_model("skresnet18", num_classes=10), state)
    assert_close(theirs(x).asnumpy(), base_logits, 1e-6, "MindCV vs base")

    switch_to_deploy(acb)
    assert not any(isinstance(c, ACBlock) and not c.deploy for _, c in acb.cells_and_names())
    assert_close(acb(x).asnumpy(), base_logits, TOL, "switch_to_deploy vs converted")


def test_registry_records_the_mindcv_twins():
    assert model_entry("skresnet18").mindcv == "skresnet18" and model_entry("skresnet34").mindcv == "skresnet34"
    # same structure as MindCV's skresnet50 / skresnext50_32x4d, but another function or other shapes
    assert model_entry("skresnet50_relu").mindcv is None and model_entry("sknet50").mindcv is None
    assert all(model_entry(n).family == "imagenet" and model_entry(n).num_classes == 1000 for n in SK_MODELS)


def test_a_mindcv_name_builds_mindcvs_network():
    """A name MindCV has is ours only where ours is MindCV's network (names, shapes, function):
    otherwise a converted checkpoint would load into MindCV's model of that name and compute
    another function, or not load."""
    from mindcv.models.registry import list_models as mindcv_models

    from acnet_ms.models.registry import _REGISTRY

    shadowed = {n: e.mindcv for n, e in _REGISTRY.items() if n in set(mindcv_models()) and e.mindcv != n}
    assert shadowed == {}
    assert model_entry("skresnet50").mindcv == "skresnet50"
    assert model_entry("skresnext50_32x4d").mindcv == "skresnext50_32x4d"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["skresnet50", "skresnext50_32x4d"])
def test_mindcv_sk_bottleneck_models_convert_into_stock_mindcv(name, tmp_path):
    import mindcv

    from acnet_ms.convert.pipeline import convert_checkpoint

    src, dst = str(tmp_path / "acb.ckpt"), str(tmp_path / "plain.ckpt")
    acb = training_checkpoint(src, name, 10, seed=8)
    assert sum(isinstance(c, ACBlock) for _, c in acb.cells_and_names()) == 16 * 2
    assert convert_checkpoint(src, dst, log=lambda *_: None)["acbs"] == 16 * 2
    stock = load_strict(mindcv.create_model(name, num_classes=10), read_checkpoint(dst)[0])
    x = images(5, size=32)
    acb_logits = acb(x).asnumpy()
    assert np.abs(acb_logits).max() > 0.1
    assert_close(stock(x).asnumpy(), acb_logits, TOL, f"stock MindCV {name} vs ACB")


@pytest.mark.slow
def test_skresnet18_acb_trains_converts_and_validates(digits, tmp_path):
    """The SK models go through the same entry points: train.py (graph mode, the SK block's one graph-mode
    training here), convert.py, validate.py (PyNative, --mode 1: the scores are what is compared)."""
    save = str(tmp_path / "sk")
    res = run_script("train.py", *small_run(digits, save, "--model", "skresnet18", "--gamma_init", 1.0,
                                            "--image_resize", 32, "--epoch_size", 1))
    assert res.returncode == 0, res.stderr[-3000:]
    assert_clean_exit(res)
    assert "skresnet18 (acb: gamma_init 1.0), 10 classes" in res.stdout and "epoch 1/1 step 5/5" in res.stdout
    trained = os.path.join(save, "skresnet18_acb-e001.ckpt")
    plain = str(tmp_path / "skresnet18_plain.ckpt")
    conv = run_script("convert.py", "--ckpt_path", trained, "--output", plain)
    assert conv.returncode == 0, conv.stderr
    assert "skresnet18: folded 24 ACBs" in conv.stdout
    counts = []
    for ckpt in (trained, plain):
        out = str(tmp_path / (os.path.basename(ckpt) + ".json"))
        val = run_script("validate.py", "--ckpt_path", ckpt, "--json", out, "--mode", 1)
        assert val.returncode == 0, val.stderr[-2000:]
        assert_clean_exit(val)
        result = json.load(open(out))
        assert result["samples"] == 60
        counts.append(result["correct1"])
    assert counts[0] == counts[1]
