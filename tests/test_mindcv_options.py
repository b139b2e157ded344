"""MindCV's options: names, defaults, legacy keys, and that each group reaches the behaviour it names."""
import os

import numpy as np
import pytest
from helpers import ROOT, assert_clean_exit, assert_one_line_error, run_main, run_script, small_run

import mindspore as ms
from mindspore import Tensor, nn

from acnet_ms.io.checkpoint import read_checkpoint, write_checkpoint
from acnet_ms.cli import UserError
from acnet_ms.config.loader import OPTIONS, defaults, parse

# every option of MindCV's config.py (mindspore-lab/mindcv), by group
MINDCV = {
    "system": "mode distribute val_while_train val_interval log_interval seed device_target",
    "data": "dataset data_dir train_split val_split dataset_download num_parallel_workers shuffle num_samples "
            "batch_size drop_remainder aug_repeats",
    "augmentation": "image_resize scale ratio hflip vflip color_jitter interpolation auto_augment aug_splits re_prob "
                    "re_scale re_ratio re_value re_max_attempts mean std crop_pct mixup cutmix cutmix_prob",
    "model": "model num_classes in_channels drop_rate drop_path_rate pretrained ckpt_path resume_opt "
             "keep_checkpoint_max ckpt_save_dir ckpt_save_interval ckpt_save_policy epoch_size dataset_sink_mode ema "
             "ema_decay clip_grad clip_value layer_decay gradient_accumulation_steps",
    "optimizer": "opt momentum weight_decay use_nesterov weight_decay_filter eps",
    "scheduler": "scheduler lr min_lr warmup_epochs warmup_factor decay_epochs decay_rate multi_step_decay_milestones "
                 "lr_epoch_stair num_cycles cycle_decay",
    "loss": "loss label_smoothing aux_factor reduction",
    "amp": "amp_level val_amp_level amp_cast_list loss_scale_type loss_scale drop_overflow_update eval_shuffle",
}


def test_every_mindcv_option_exists_with_mindcvs_default():
    missing = [n for names in MINDCV.values() for n in names.split() if n not in OPTIONS]
    assert not missing
    d = defaults()
    expected = dict(batch_size=128, lr=0.001, opt="adam", epoch_size=90, weight_decay=1e-6, min_lr=1e-6,
                    warmup_epochs=3, decay_epochs=100, decay_rate=0.9, multi_step_decay_milestones=[30, 60, 90],
                    ema_decay=0.9999, clip_value=15.0, dataset_sink_mode=True, ckpt_save_policy="latest_k",
                    color_jitter=0.4, eps=1e-10, num_classes=None, model="mobilenet_v2_035_224", shuffle=True,
                    drop_remainder=True, cutmix_prob=1.0, re_max_attempts=10, loss_scale_type="fixed",
                    use_nesterov=False, val_amp_level="O0", gradient_accumulation_steps=1)
    assert {k: d[k] for k in expected} == expected
    assert d["mean"] == pytest.approx([123.675, 116.28, 103.53]) and d["std"] == pytest.approx([58.395, 57.12, 57.375])
    assert "nesterov" not in OPTIONS  # MindCV's name is use_nesterov


def test_help_shows_groups_defaults_and_choices(capsys):
    with pytest.raises(SystemExit):
        parse(["--help"], "")
    text = capsys.readouterr().out
    assert "Augmentation options:" in text and "Auto mixed precision options:" in text
    assert "(default: 128)" in text  # batch_size
    assert "one of fixed, dynamic, auto" in text


def test_older_recipe_keys_and_mindcv_value_forms(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("filter_bias_and_bn: True\ndynamic_loss_scale: True\nmin_lr: 1e-10\ncolor_jitter: [0.4, 0.4, 0.4]\n"
                    "ckpt_save_dir: ''\nckpt_path: ''\nmodel: 'src20'\n")
    cfg, _ = parse(["--config", str(path), "--distribute", "--ema"], "")
    assert cfg["weight_decay_filter"] == "norm_and_bias" and cfg["loss_scale_type"] == "dynamic"
    assert cfg["min_lr"] == 1e-10 and cfg["color_jitter"] == [0.4, 0.4, 0.4]
    assert cfg["ckpt_save_dir"] == "./ckpt" and cfg["ckpt_path"] is None
    assert cfg["distribute"] is True and cfg["ema"] is True  # bare flags, as MindCV's str2bool with const=True


@pytest.mark.parametrize("args,fragment", [
    (["--enable_modelarts", "True"], "ModelArts"),
    (["--aug_repeats", "3", "--num_samples", "10"], "cannot be set together"),
    (["--hflip", "1.5"], "'hflip' must be in [0, 1]"),
    (["--nesterov", "True"], "did you mean '--use_nesterov'"),
    (["--ckpt_save_policy", "best"], "one of latest_k, top_k, None"),
])
def test_bad_option_values_are_one_line(args, fragment):
    with pytest.raises(UserError) as err:
        parse(args, "")
    assert fragment in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------ train step behaviour (unit, tiny nets)

def _dense(seed=0):
    ms.set_seed(seed)
    return nn.SequentialCell([nn.Flatten(), nn.Dense(12, 4)])


def _batch(n=8, seed=0, huge=False):
    """A batch; ``huge``: inputs of magnitude 1e38, whose scaled gradients overflow float32."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3, 2, 2))
    return (Tensor((np.sign(x) * 1e38 if huge else x).astype(np.float32)),
            Tensor(rng.integers(0, 4, n).astype(np.int32)))


def _step(net, window=2000, lrs=(0.1,) * 8, **options):
    from acnet_ms.training.factories import build_train_step

    cfg = dict(defaults(), device_target="CPU", opt="momentum", weight_decay=0.0)
    cfg.update(options)
    return build_train_step(net, cfg, list(lrs), scale_window=window)[0]


def test_dynamic_loss_scale_on_cpu_grows_after_its_window_and_halves_on_overflow():
    net = _dense()
    step = _step(net, window=2, loss_scale_type="dynamic", loss_scale=4.0)
    x, y = _batch()
    scales = [float(step(x, y)[2].asnumpy()) for _ in range(3)]
    assert scales == [4.0, 8.0, 8.0]  # the scale a step used; doubled after 2 finite steps
    before = net[1].weight.asnumpy().copy()
    loss, finite, _ = step(*_batch(huge=True))  # scaled gradients overflow float32
    assert not bool(finite.asnumpy())
    assert np.array_equal(net[1].weight.asnumpy(), before)  # the update was skipped
    assert step.scaler_state() == dict(loss_scale_value=4.0, loss_scale_counter=0)  # halved
    step(x, y)
    assert not np.array_equal(net[1].weight.asnumpy(), before)


def test_fixed_scale_with_drop_overflow_update_skips_without_changing_the_scale():
    net = _dense()
    step = _step(net, loss_scale=1024.0, drop_overflow_update=True)
    before = net[1].weight.asnumpy().copy()
    _, finite, scale = step(*_batch(huge=True))
    assert not bool(finite.asnumpy()) and float(scale.asnumpy()) == 1024.0
    assert np.array_equal(net[1].weight.asnumpy(), before)


@pytest.mark.parametrize("mode", ["pynative", pytest.param("graph", marks=pytest.mark.graph)])
def test_gradient_accumulation_of_k_batches_updates_like_one_batch_k_times_larger(mode):
    (x1, y1), (x2, y2) = _batch(4, 1), _batch(4, 2)
    net_a = _dense()
    step = _step(net_a, gradient_accumulation_steps=2)
    step(x1, y1)
    after_first = net_a[1].weight.asnumpy().copy()
    step(x2, y2)
    net_b = _dense()
    start = net_b[1].weight.asnumpy().copy()
    _step(net_b)(Tensor(np.concatenate([x1.asnumpy(), x2.asnumpy()])), Tensor(np.concatenate([y1.asnumpy(),
                                                                                               y2.asnumpy()])))
    assert np.array_equal(after_first, start)  # no update after the first of two batches
    assert np.abs(net_b[1].weight.asnumpy() - start).max() > 1e-3
    np.testing.assert_allclose(net_a[1].weight.asnumpy(), net_b[1].weight.asnumpy(), atol=1e-6)


def test_clip_grad_bounds_the_global_gradient_norm():
    changes = {}
    for clip in (False, True):
        net = _dense()
        start = [p.asnumpy().copy() for p in net.trainable_params()]
        step = _step(net, lrs=[1.0], opt="sgd", momentum=0.0, clip_grad=clip, clip_value=0.01)
        step(Tensor(_batch()[0].asnumpy() * 10), _batch()[1])
        changes[clip] = np.sqrt(sum(((p.asnumpy() - s) ** 2).sum() for p, s in zip(net.trainable_params(), start)))
    assert changes[False] > 0.1
    assert changes[True] == pytest.approx(0.01, rel=1e-3)  # lr 1: the step is the clipped gradient


def test_ema_weights_move_towards_the_online_ones_and_swap():
    net = _dense()
    step = _step(net, ema=True, ema_decay=0.9)
    start = net[1].weight.asnumpy().copy()
    for _ in range(3):
        step(*_batch())
    online = net[1].weight.asnumpy().copy()
    averaged = step.averaged[0].asnumpy().copy()
    assert not np.allclose(online, averaged) and not np.allclose(averaged, start)
    step.swap_ema()
    assert np.array_equal(net[1].weight.asnumpy(), averaged)
    step.swap_ema()
    assert np.array_equal(net[1].weight.asnumpy(), online)


# ------------------------------------------------------------------ data options (no model)

def _loader_cfg(digits, **options):
    return dict(defaults(), data_dir=digits, train_list="train_small.txt", val_list="val_small.txt",
                num_classes=10, image_resize=16, batch_size=8, num_parallel_workers=1, **options)


@pytest.mark.parametrize("mix", [dict(mixup=0.8), dict(cutmix=1.0)], ids=["mixup", "cutmix"])
def test_mixup_and_cutmix_give_soft_labels(digits, mix):
    from acnet_ms.engine import data

    cfg = _loader_cfg(digits, **mix)
    loader = data.create_loader(cfg, data.inspect(cfg, "train"), True)
    labels = np.concatenate([label.asnumpy() for _, label in loader.create_tuple_iterator(num_epochs=1)])
    assert labels.shape == (160, 10)
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
    assert (labels.max(axis=1) < 0.999).mean() > 0.5  # mostly mixed, not one-hot


def test_aug_repeats_repeats_each_sample():
    from acnet_ms.engine import data

    cfg = dict(defaults(), aug_repeats=3, shuffle=True)
    indices = list(iter(data._training_sampler(cfg, 512, 0, 1)))
    assert len(indices) == 512
    assert indices[0] == indices[1] == indices[2] != indices[3]  # each sample three times in a row
    _, counts = np.unique(indices, return_counts=True)
    assert sorted(counts)[1:] == [3] * (len(counts) - 1)  # all three times; one may be cut at the epoch's end


def test_validation_keeps_every_sample_and_integer_labels_with_mixup(digits):
    from acnet_ms.engine import data

    cfg = _loader_cfg(digits, mixup=0.8)
    loader = data.create_loader(cfg, data.inspect(cfg, "val"), False)
    labels = np.concatenate([label.asnumpy() for _, label in loader.create_tuple_iterator(num_epochs=1)])
    assert labels.shape == (60,) and labels.dtype == np.int32


# ------------------------------------------------------------------ bookkeeping shared by loop and sink

def test_plan_launches_boundaries_schedule_position_and_cadence():
    from acnet_ms.training.run import Plan

    lrs = [0.1 * (i + 1) for i in range(5 * 6)]
    plan = Plan(6, 5, lrs, start_epoch=2, start_step=12, val_interval=2, save_interval=3, validating=True)
    assert plan.sink_size == 6
    assert plan.launches() == [(3, 6), (4, 6), (5, 6)]  # resumed after epoch 2: three launches of one epoch
    assert [plan.step_after(e) for e in (3, 4, 5)] == [18, 24, 30]
    assert plan.lr_at(18) == lrs[17] and plan.lr_at(30) == lrs[29] and np.isnan(plan.lr_at(0))
    assert [e for e in range(1, 6) if plan.validates(e)] == [2, 4, 5]  # and always the last
    assert [e for e in range(1, 6) if plan.saves(e)] == [3, 5]
    assert plan.resume_point() == (2, 12)
    assert not Plan(6, 5, lrs).validates(5)  # no validation split, no validation


def test_checkpoint_policies_keep_the_newest_the_best_or_all(tmp_path):
    from acnet_ms.training.checkpoints import Checkpoints

    files = [f"e{i}" for i in range(1, 6)]
    scores = {"e1": 0.5, "e2": 0.9, "e3": 0.7, "e4": 0.9, "e5": 0.1}
    assert Checkpoints("", "p", 2, "latest_k").to_remove(files, scores) == ["e1", "e2", "e3"]
    assert Checkpoints("", "p", 2, "top_k").to_remove(files, scores) == ["e1", "e3", "e5"]
    assert Checkpoints("", "p", 2, None).to_remove(files, scores) == []


# ------------------------------------------------------------------ through train.py / validate.py

@pytest.fixture(scope="module")
def ema_run(digits, tmp_path_factory):
    """Two epochs with EMA, dynamic loss scaling, top_k checkpoints and the sink flag on CPU."""
    save = str(tmp_path_factory.mktemp("ema"))
    res = run_script("train.py", *small_run(digits, save, "--epoch_size", 2, "--ema", "True", "--ema_decay", 0.5,
                                            "--loss_scale_type", "dynamic", "--loss_scale", 256,
                                            "--ckpt_save_policy", "top_k", "--keep_checkpoint_max", 1,
                                            "--dataset_sink_mode", "True"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert_clean_exit(res)
    return save, res


@pytest.mark.slow
def test_sink_mode_on_cpu_runs_the_loop_with_one_line(ema_run):
    _, res = ema_run
    assert res.stdout.count("dataset_sink_mode") == 1 and "running the step loop on CPU" in res.stdout
    assert "epoch 2/2 step 5/5" in res.stdout


@pytest.mark.slow
def test_ema_is_what_is_validated_and_saved_and_the_scale_is_recorded(ema_run, digits):
    import re

    save, res = ema_run
    ckpts = sorted(f for f in os.listdir(save) if f.endswith(".ckpt"))
    assert ckpts[0] == "src20_acb-best.ckpt" and len(ckpts) == 2  # top_k with k = 1 keeps one epoch file
    arrays, meta = read_checkpoint(os.path.join(save, ckpts[1]))
    assert meta["ema_in_model_slots"] and meta["loss_scale_value"] == 256.0 and meta["loss_scale_counter"] > 0
    w, online = arrays["conv1.square_conv.weight"], arrays["ema.conv1.square_conv.weight"]
    assert not np.allclose(w, online)  # the model's names hold the average, ema.* the online weights
    in_run = re.findall(r"epoch (\d)/2 done: .* val top1 ([\d.]+)", res.stdout)
    epoch = int(ckpts[1][-8:-5])
    top1 = dict(in_run)[str(epoch)]
    assert top1 == max(t for _, t in in_run)  # top_k kept the best epoch
    out = run_script("validate.py", "--ckpt_path", os.path.join(save, ckpts[1]), "--data_dir", digits,
                     "--val_list", "val_small.txt", "--num_parallel_workers", 1)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1].startswith(f"top1={top1} ")


@pytest.mark.slow
def test_resume_restores_the_loss_scale(ema_run):
    from acnet_ms.engine.runtime import build_model
    from acnet_ms.training.checkpoints import restore
    from acnet_ms.training.factories import build_train_step

    save, _ = ema_run
    path = os.path.join(save, "src20_acb-best.ckpt")
    _, meta = read_checkpoint(path)
    cfg = dict(meta["config"], resume=path, ckpt_path=None)
    step, _ = build_train_step(build_model(cfg), cfg, [0.1] * 10)
    assert step.scaler_state()["loss_scale_counter"] == 0
    restore(step, cfg, 5, log=lambda *_: None)
    assert step.scaler_state() == dict(loss_scale_value=meta["loss_scale_value"],
                                       loss_scale_counter=meta["loss_scale_counter"])


@pytest.mark.slow
def test_validate_on_a_stock_checkpoint_reads_classes_and_asks_for_the_model(digits, tmp_path):
    from acnet_ms import create_model

    net = create_model("src20", num_classes=10)
    ckpt = str(tmp_path / "src20_stock.ckpt")
    ms.save_checkpoint(net, ckpt)  # as MindCV writes it: no acnet_ms metadata
    args = ["--ckpt_path", ckpt, "--data_dir", digits, "--val_list", "val_small.txt", "--num_parallel_workers", 1]
    # the closest names to the file's come first, and the command that lists them all
    assert_one_line_error(run_main("validate.py", *args), "does not record its model; pass --model", "src20",
                          "python -m acnet_ms.models")
    res = run_script("validate.py", *args, "--model", "src20")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1].endswith("samples=60")


def test_the_class_count_comes_from_the_models_own_classifier_entries():
    """One rule for every entry point: the entries whose shape follows num_classes (the model built at two
    class counts), dense, conv or auxiliary heads alike; optimizer copies are not the network's."""
    from acnet_ms.models import num_classes_of
    from acnet_ms.models.factory import classifier_entries
    from acnet_ms.reparam.state import network_entries

    z = np.zeros
    assert classifier_entries("squeezenet1_0") == {"classifier.1.weight": 0, "classifier.1.bias": 0}
    assert set(classifier_entries("inception_v3")) == {"aux.fc.weight", "aux.fc.bias", "classifier.weight",
                                                      "classifier.bias"}
    state = {"conv1.weight": z((64, 3, 7, 7)), "classifier.weight": z((5, 512)), "moments.classifier.weight":
             z((5, 512))}
    assert num_classes_of("resnet18", network_entries(state)) == 5
    assert num_classes_of("resnet18", {"conv1.weight": z((64, 3, 7, 7))}) is None

def test_a_failing_resume_leaves_an_earlier_run_as_it_was(digits, tmp_path):
    from acnet_ms import create_model

    save = tmp_path / "run"
    save.mkdir()
    (save / "config.yaml").write_text("earlier: run\n")
    ckpt = str(tmp_path / "other.ckpt")
    net = create_model("src56", block_type="acb")
    write_checkpoint(ckpt, {p.name: p.asnumpy() for p in net.get_parameters()},
                     dict(model="src56", block_type="acb", num_classes=10, epoch=1, step=5))
    assert_one_line_error(run_main("train.py", *small_run(digits, str(save), "--resume", ckpt)), "checkpoint of src56")
    assert sorted(os.listdir(save)) == ["config.yaml"]
    assert (save / "config.yaml").read_text() == "earlier: run\n"


@pytest.mark.slow
def test_many_workers_are_lowered_with_one_line(digits, tmp_path):
    res = run_script("train.py", *small_run(digits, str(tmp_path / "run"), "--epoch_size", 1, "--val_while_train",
                                            "False", "--num_parallel_workers", 64, "--log_interval", 5))
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("num_parallel_workers 64 is more than") == 1


def test_docs_list_every_option():
    text = open(os.path.join(ROOT, "docs", "options.md"), encoding="utf-8").read()
    assert [name for name in OPTIONS if f"| `{name}` |" not in text] == []


def test_our_recipes_use_mindcvs_keys_plus_ours_only():
    import glob

    from acnet_ms.config.loader import read_yaml

    mindcv = {n for names in MINDCV.values() for n in names.split()}
    ours = {name for name, o in OPTIONS.items() if o.ours}
    for path in glob.glob(os.path.join(ROOT, "configs", "*.yaml")):
        extra = set(read_yaml(path)) - mindcv - ours
        assert not extra, (path, extra)


def test_drop_path_rate_reaches_the_model_in_training_and_not_in_eval():
    """A MindCV model that takes drop_path_rate (stochastic depth): random in training, deterministic in eval."""
    from acnet_ms.config.loader import defaults
    from acnet_ms.engine.runtime import build_model

    cfg = dict(defaults(), model="convnextv2_atto", num_classes=10, drop_path_rate=0.5)
    net = build_model(cfg)
    x = ms.Tensor(np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32))
    net.set_train(True)
    ms.set_seed(1)
    train = [net(x).asnumpy() for _ in range(3)]
    net.set_train(False)
    evals = [net(x).asnumpy() for _ in range(2)]
    plain = build_model(dict(cfg, drop_path_rate=None))
    assert any(not np.allclose(train[0], t) for t in train[1:])  # paths dropped at random
    np.testing.assert_array_equal(evals[0], evals[1])
    def drop_paths(model):
        return sum(type(cell).__name__ == "DropPath" for _, cell in model.cells_and_names())

    assert drop_paths(net) > 0 and drop_paths(plain) == 0  # the option reached the model
