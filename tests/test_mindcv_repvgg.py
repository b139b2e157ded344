"""MindCV's own RepVGG becomes deployable: its three-branch blocks fold into the single-branch deploy form.

MindCV 0.3.0's deploy path does not run in MindSpore 2.8 (``switch_to_deploy``,
``repvgg_model_convert``, ``create_model(..., deploy=True)``); convert.py and
``create_model(name, deploy=True)`` give the form ``RepVGG(deploy=True)`` means.
"""
import json
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from acnet_ms import create_model
from acnet_ms.kinds import identities
from acnet_ms.reparam.state import fold_state
from acnet_ms.io.checkpoint import read_checkpoint, write_checkpoint
from acnet_ms.kinds.repvgg.blocks import repvgg_blocks, repvgg_layout, repvgg_to_deploy
from helpers import (ROOT, arrays_of, assert_clean_exit, assert_close, assert_one_line_error, images, load_strict,
                      randomize_bn, run_main, run_script, small_run)

TOL = 1e-4
NAME = "repvgg_a0"


def trained_repvgg(seed=0, num_classes=10, **kwargs):
    """MindCV's repvgg_a0 through our registry, its BNs' statistics and affine parameters random; eval mode."""
    ms.set_seed(seed)
    net = randomize_bn(create_model(NAME, num_classes=num_classes, **kwargs), seed=seed)
    net.set_train(False)
    return net


def mindcv_deploy_model(num_classes=10):
    """MindCV's own ``RepVGG(deploy=True)`` for repvgg_a0, with the one fix it needs in MindSpore 2.8: its
    blocks' ``padding_mode`` default ``"zeros"`` (which it passes as the conv's pad_mode) set to ``"pad"``."""
    from mindcv.models.repvgg import RepVGG, RepVGGBlock

    defaults = RepVGGBlock.__init__.__defaults__
    RepVGGBlock.__init__.__defaults__ = tuple("pad" if v == "zeros" else v for v in defaults)
    try:
        return RepVGG(num_blocks=[2, 4, 14, 1], num_classes=num_classes, width_multiplier=[0.75, 0.75, 0.75, 2.5],
                      deploy=True)
    finally:
        RepVGGBlock.__init__.__defaults__ = defaults


def logits(net, x):
    net.set_train(False)
    return net(x).asnumpy()


# ---------------------------------------------------------------- the fold

def test_identity_kernel_is_the_identity_map_of_grouped_convs():
    k = identities.identity_kernel(6, 3, 3)  # 6 channels in 2 groups
    assert k.shape == (6, 3, 3, 3) and k.sum() == 6
    assert all(k[i, i % 3, 1, 1] == 1 for i in range(6))


def test_blocks_with_groups_strides_and_identity_fold_exactly():
    """Grouped, depthwise and strided blocks (the b1g2/b1g4 layers are grouped) against MindSpore's own
    convs: the folded conv gives the three branches' sum."""
    from mindcv.models.repvgg import RepVGGBlock

    ms.set_seed(3)
    net = nn.SequentialCell([RepVGGBlock(4, 8, 3, stride=2, padding=1), RepVGGBlock(8, 8, 3, padding=1, group=2),
                             RepVGGBlock(8, 8, 3, padding=1, group=8)])
    randomize_bn(net, seed=3)
    x = images(1, size=12, channels=4)
    expected = logits(net, x)
    layout = repvgg_layout(net)
    assert [(i["identity"], i["groups"]) for i in layout.values()] == [(False, 1), (True, 2), (True, 8)]
    assert {e for i in layout.values() for e in i["eps"].values()} == {1e-5}  # MindCV's BNs: MindSpore's default
    folded, names = fold_state(arrays_of(net), layout)
    assert names == ["0", "1", "2"] and len(folded) == 6
    assert repvgg_to_deploy(net) == 3 and not repvgg_blocks(net)  # in place, the weights folded
    assert not [c for _, c in net.cells_and_names() if isinstance(c, nn.BatchNorm2d)]
    assert_close(logits(net, x), expected, TOL, "folded in place")
    assert_close(logits(load_strict(net, folded), x), expected, TOL, "folded checkpoint dict")


# ---------------------------------------------------------------- checkpoints -> deploy form

def save_as_a_user_would(net, path, optimizer):
    """``mindspore.save_checkpoint`` of the network, or of the network and an optimizer's slots and scalars
    (what a training loop's checkpoint callback saves), recording nothing of ours."""
    params = [{"name": p.name, "data": p} for p in net.get_parameters()]
    if optimizer:
        for slot in ("adam_m", "adam_v"):
            params += [{"name": f"{slot}.{p.name}", "data": Tensor(np.full(p.shape, 0.5, np.float32))}
                       for p in net.trainable_params()]
        params += [{"name": n, "data": Tensor(np.array(v, np.float32))}
                   for n, v in (("learning_rate", 0.1), ("global_step", 7), ("beta1_power", 0.9))]
    ms.save_checkpoint(params, str(path))


@pytest.mark.parametrize("optimizer", [False, True], ids=["bare", "with_optimizer"])
def test_a_mindcv_users_checkpoint_converts_to_the_deploy_form(optimizer, tmp_path):
    net = trained_repvgg()
    x = images(0, size=32)
    expected = logits(net, x)
    save_as_a_user_would(net, tmp_path / "train.ckpt", optimizer)
    res = run_main("convert.py", "--ckpt_path", tmp_path / "train.ckpt", "--output", tmp_path / "deploy.ckpt",
                   "--model", NAME)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "folded 22 RepVGG blocks (the model's own) into one conv each" in res.stdout
    state, meta = read_checkpoint(str(tmp_path / "deploy.ckpt"))
    assert meta["deploy"] is True and meta["num_classes"] == 10 and meta["block_type"] == "base"
    assert len(state) == 46 and "stage1.0.rbr_reparam.bias" in state  # 22 convs with bias + the classifier

    ours = create_model(NAME, num_classes=10, deploy=True)
    assert len(ours.acnet.native_blocks) == 22 and ours.acnet.fused_pairs == []
    assert not [c for _, c in ours.cells_and_names() if isinstance(c, nn.BatchNorm2d)]
    assert_close(logits(load_strict(ours, state), x), expected, TOL, "our deploy model")
    mindcvs = mindcv_deploy_model()
    assert [p.name for p in mindcvs.get_parameters()] == list(state)  # MindCV's deploy names, in its order
    assert_close(logits(load_strict(mindcvs, state), x), expected, TOL, "MindCV's RepVGG(deploy=True)")


def test_mindcvs_own_deploy_path_fails_in_mindspore_2_8():
    """What docs/deploy.md says fails (if this test fails, MindCV's path runs: say so there)."""
    import mindcv
    from mindcv.models.repvgg import RepVGG, repvgg_model_convert

    with pytest.raises(TypeError, match="multiple values for keyword argument 'deploy'"):
        mindcv.create_model(NAME, deploy=True)
    with pytest.raises(ValueError, match="pad_mode.*zeros"):
        RepVGG(num_blocks=[2, 4, 14, 1], num_classes=10, width_multiplier=[0.75, 0.75, 0.75, 2.5], deploy=True)
    net = mindcv.create_model(NAME, num_classes=10)
    with pytest.raises(AttributeError, match="has no attribute 'conv'"):
        net.stage0.switch_to_deploy()
    with pytest.raises(AttributeError, match="has no attribute 'modules'"):
        repvgg_model_convert(net, do_copy=False)


@pytest.mark.slow
def test_an_acb_repvgg_checkpoint_folds_both_kinds_of_block(tmp_path):
    """ACBs in the dense branches: convert.py folds them into MindCV's stock (three-branch) model, saying
    that --fold_bn goes on to the deploy form; with --fold_bn both fold."""
    from helpers import training_checkpoint

    net = training_checkpoint(str(tmp_path / "acb.ckpt"), NAME, block_type="acb")
    x = images(2, size=32)
    expected = logits(net, x)
    res = run_main("convert.py", "--ckpt_path", tmp_path / "acb.ckpt", "--output", tmp_path / "stock.ckpt")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "folded 22 ACBs;" in res.stdout and "--fold_bn folds each into one conv" in res.stdout
    stock = load_strict(create_model(NAME, num_classes=10), str(tmp_path / "stock.ckpt"))
    assert_close(logits(stock, x), expected, TOL, "stock three-branch model")
    res = run_main("convert.py", "--ckpt_path", tmp_path / "acb.ckpt", "--output", tmp_path / "deploy.ckpt",
                   "--fold_bn")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "folded 22 ACBs, then 22 RepVGG blocks (the model's own) into one conv each, then 0 BatchNorms" \
        in res.stdout
    deploy = load_strict(create_model(NAME, num_classes=10, deploy=True), str(tmp_path / "deploy.ckpt"))
    assert_close(logits(deploy, x), expected, TOL, "deploy model")


def test_validate_deploy_runs_the_single_branch_form_with_the_same_scores(digits, tmp_path):
    from acnet_ms.config import loader as config
    from acnet_ms.engine.evaluation import eval_setup
    from helpers import training_checkpoint

    path = tmp_path / "train.ckpt"
    training_checkpoint(str(path), NAME, block_type="base")  # as train.py records one: model, base, classes
    argv = [str(a) for a in ("--ckpt_path", path, "--config", os.path.join(ROOT, "configs", "demo_digits.yaml"),
                             "--model", NAME, "--block_type", "base", "--data_dir", digits,
                             "--val_list", "val_small.txt", "--num_parallel_workers", 1, "--mode", 1)]
    runs = {}
    for form, extra in (("train", []), ("deploy", ["--deploy"])):
        res = run_main("validate.py", *argv, *extra, "--json", tmp_path / f"{form}.json")
        assert res.returncode == 0, res.stderr[-2000:]
        runs[form] = json.loads((tmp_path / f"{form}.json").read_text())
    assert runs["train"]["samples"] == runs["deploy"]["samples"] == 60
    assert runs["train"]["correct1"] == runs["deploy"]["correct1"]
    assert runs["deploy"]["loss"] == pytest.approx(runs["train"]["loss"], rel=1e-4)
    cfg, _ = config.parse(argv, "validate.py", base=dict(model=NAME, num_classes=10))
    net, _, _ = eval_setup(cfg, read_checkpoint(str(path))[0], deploy=True, log=lambda *_: None)
    assert len(net.acnet.native_blocks) == 22 and not repvgg_blocks(net)  # --deploy did run the deploy form
    assert not [c for _, c in net.cells_and_names() if isinstance(c, nn.BatchNorm2d)]


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("entry", ["stage1.0.rbr_1x1.1.gamma", "stage2.1.rbr_identity.moving_variance",
                                   "stage3.4.rbr_dense.0.weight"])
def test_a_missing_branch_entry_is_one_line_naming_it(entry, tmp_path):
    state = {k: v for k, v in arrays_of(create_model(NAME, num_classes=10)).items() if k != entry}
    write_checkpoint(str(tmp_path / "cut.ckpt"), state, {"model": NAME})
    res = run_main("convert.py", "--ckpt_path", tmp_path / "cut.ckpt", "--output", tmp_path / "out.ckpt")
    block = entry.split(".rbr_")[0]
    assert_one_line_error(res, "cut.ckpt", f"RepVGG block '{block}'", f"'{entry}' is missing")
    assert os.listdir(tmp_path) == ["cut.ckpt"]


def test_a_plain_checkpoint_of_another_model_is_still_already_plain(tmp_path):
    write_checkpoint(str(tmp_path / "plain.ckpt"), arrays_of(create_model("src20")), {"model": "src20"})
    res = run_main("convert.py", "--ckpt_path", tmp_path / "plain.ckpt", "--output", tmp_path / "out.ckpt")
    assert_one_line_error(res, "already plain")


# ---------------------------------------------------------------- train.py -> validate.py / convert.py

@pytest.fixture(scope="module")
def repvgg_run(digits, tmp_path_factory):
    """train.py: one epoch of the digits recipe with ``model: repvgg_a0``, ``block_type: base``."""
    save = str(tmp_path_factory.mktemp("repvgg"))
    res = run_script("train.py", *small_run(digits, save, "--model", NAME, "--block_type", "base",
                                            "--epoch_size", 1, "--keep_checkpoint_max", 1))
    assert res.returncode == 0, res.stderr[-3000:]
    ckpts = sorted(f for f in os.listdir(save) if f.endswith(".ckpt"))
    return os.path.join(save, ckpts[-1])


def scores(ckpt, digits, out, *extra):
    res = run_script("validate.py", "--ckpt_path", ckpt, "--data_dir", digits, "--val_list", "val_small.txt",
                     "--num_parallel_workers", 1, "--json", out, *extra)
    assert res.returncode == 0, res.stderr[-3000:]
    assert_clean_exit(res)
    return json.loads(open(out).read())


@pytest.mark.slow
def test_train_validate_convert_validate_scores_both_forms_alike(repvgg_run, digits, tmp_path):
    import onnxruntime  # noqa: F401  (the ONNX graph is scored too)

    deploy, onnx = tmp_path / "deploy.ckpt", tmp_path / "deploy.onnx"
    res = run_script("convert.py", "--ckpt_path", repvgg_run, "--output", deploy, "--fold_bn", "--export", "onnx")
    assert res.returncode == 0, res.stderr[-3000:]
    assert_clean_exit(res)
    assert "folded 22 RepVGG blocks" in res.stdout and "input shape [1, 3, 16, 16]" in res.stdout
    runs = {"train": scores(repvgg_run, digits, tmp_path / "t.json"),
            "train --deploy": scores(repvgg_run, digits, tmp_path / "td.json", "--deploy"),
            "deploy": scores(deploy, digits, tmp_path / "d.json"),
            "onnx": scores(onnx, digits, tmp_path / "o.json")}
    ref = runs["train"]
    for form, run in runs.items():
        assert run["samples"] == 60 and run["correct1"] == ref["correct1"], (form, run, ref)
        assert run["loss"] == pytest.approx(ref["loss"], rel=1e-4), form
    assert "stage0.rbr_reparam.bias" in read_checkpoint(str(deploy))[0]
