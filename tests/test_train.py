"""train.py / validate.py on real data (scikit-learn's digits): the whole product path."""
import json
import os
import platform
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
from helpers import (ROOT, assert_clean_exit, assert_close, assert_one_line_error, images, randomize_bn, run_main,
                      run_script, small_run, training_checkpoint, user_env)

import mindspore as ms
from mindspore import Tensor

import acnet_ms
from acnet_ms import create_model
from acnet_ms.cli import UserError
from acnet_ms.config.loader import load_config
from acnet_ms.engine.loading import load_pretrained
from acnet_ms.io.checkpoint import read_checkpoint, write_checkpoint

PROGRESS = re.compile(r"^epoch (\d+)/(\d+) step (\d+)/(\d+) loss [\d.]+ lr [\d.]+ images/s [\d.]+ eta \d+:\d\d:\d\d$",
                      re.M)
FINISHED = re.compile(r"finished: (\d+) steps .* final lr ([\d.]+); weights sha256 (\w+)")


def metrics_of(res):
    assert res.returncode == 0, res.stderr
    assert_clean_exit(res)
    last = res.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"top1=\d\.\d{4} top5=\d\.\d{4} loss=\d+\.\d{4} samples=\d+", last), last
    return last


@pytest.mark.slow
def test_training_writes_progress_checkpoints_config_and_summaries(trained_run):
    save, res = trained_run  # conftest: two epochs of the demo recipe, one epoch checkpoint kept
    assert_clean_exit(res)
    steps = PROGRESS.findall(res.stdout)
    assert len(steps) == 10 and steps[-1] == ("2", "2", "5", "5")  # 160 images / 32 = 5 steps an epoch
    assert re.search(r"epoch 2/2 done: mean loss [\d.]+, [\d.]+ s; val top1 [\d.]+ top5 [\d.]+ loss [\d.]+ "
                     r"\(60 samples\)", res.stdout)
    files = sorted(os.listdir(save))
    assert files == ["config.yaml", "src20_acb-best.ckpt", "src20_acb-e002.ckpt", "summary.jsonl",
                     "train_rank0.log"]  # keep_checkpoint_max 1 removed e001; no temporary files
    assert f"last checkpoint: {os.path.join(save, 'src20_acb-e002.ckpt')}" in res.stdout
    assert f"best checkpoint: {os.path.join(save, 'src20_acb-best.ckpt')}" in res.stdout
    saved = load_config(os.path.join(save, "config.yaml"))
    assert saved["model"] == "src20" and saved["epoch_size"] == 2 and saved["train_list"] == "train_small.txt"
    summaries = [json.loads(line) for line in open(os.path.join(save, "summary.jsonl"))]
    assert [s["epoch"] for s in summaries] == [1, 2] and [s["step"] for s in summaries] == [5, 10]
    arrays, meta = read_checkpoint(os.path.join(save, "src20_acb-e002.ckpt"))
    assert {k: meta[k] for k in ("model", "block_type", "num_classes", "epoch", "step")} == \
        dict(model="src20", block_type="acb", num_classes=10, epoch=2, step=10)
    assert meta["block_options"]["gamma_init"] == pytest.approx(1 / 3)
    assert any(k.startswith("moments.") for k in arrays) and "global_step" in arrays  # optimizer state kept
    # what it ran on: in the checkpoint, and in the run's second line
    from importlib.metadata import version

    assert meta["stack"] == dict(acnet_ms=acnet_ms.__version__, mindspore=version("mindspore"),
                                 mindcv=version("mindcv"), python=platform.python_version(), device_target="CPU")
    second = res.stdout.splitlines()[1]
    assert second.startswith(f"acnet_ms {acnet_ms.__version__}, MindSpore {version('mindspore')}, MindCV "
                             f"{version('mindcv')}, Python {platform.python_version()}, CPU; tested: "), second
    log = open(os.path.join(save, "train_rank0.log")).read()
    assert "epoch 2/2 done" in log and FINISHED.search(log)


@pytest.mark.slow
def test_validate_gives_identical_top1_for_acb_deploy_and_converted(trained_run, tmp_path):
    save, _ = trained_run
    ckpt = os.path.join(save, "src20_acb-best.ckpt")
    runs = {}
    for name, args in (("acb", []), ("deploy", ["--deploy"])):
        out = tmp_path / f"{name}.json"
        runs[name] = (metrics_of(run_script("validate.py", "--ckpt_path", ckpt, *args, "--json", out)),
                      json.loads(out.read_text()))
    plain = str(tmp_path / "plain.ckpt")
    conv = run_script("convert.py", "--ckpt_path", ckpt, "--output", plain)
    assert conv.returncode == 0, conv.stderr
    out = tmp_path / "plain.json"
    runs["plain"] = (metrics_of(run_script("validate.py", "--ckpt_path", plain, "--json", out)),
                     json.loads(out.read_text()))
    counts = {name: data["correct1"] for name, (_, data) in runs.items()}
    assert len(set(counts.values())) == 1, counts
    assert {data["samples"] for _, data in runs.values()} == {60}
    assert 0.0 < runs["acb"][1]["top1"] <= 1.0
    # on the full split (359 images of the ImageFolder), with validate.py options overriding the recorded ones
    res = run_script("validate.py", "--ckpt_path", plain, "--val_list", "none", "--batch_size", 64,
                     "--log_interval", 2)
    assert metrics_of(res).endswith("samples=359")
    progress = re.findall(r"^validation batch (\d+)/6: (\d+) samples, [\d.]+ samples/s, eta \d+:\d\d:\d\d$",
                          res.stdout, re.M)
    assert progress == [("2", "128"), ("4", "256"), ("6", "359")], res.stdout


def test_finetuning_a_plain_checkpoint_into_acb_starts_from_the_same_function(tmp_path):
    ms.set_seed(3)
    base = randomize_bn(create_model("src20"), seed=4)
    path = str(tmp_path / "plain.ckpt")
    write_checkpoint(path, {p.name: p.asnumpy() for p in base.get_parameters()}, {"model": "src20"})
    acb = randomize_bn(create_model("src20", block_type="acb", gamma_init=1 / 3), seed=9)
    lines = []
    load_pretrained(acb, path, log=lines.append)
    x = images(0, 16, batch=4)
    base.set_train(False)
    acb.set_train(False)
    assert_close(acb(x).asnumpy(), base(x).asnumpy(), 1e-5, "ACB started from plain weights")
    assert lines[0].startswith("loaded ") and not any(line.startswith("skipped") for line in lines)
    # another number of classes: everything but the classifier loads, and the log names what was skipped
    other = create_model("src20", num_classes=5, block_type="acb")
    with pytest.raises(UserError, match=r"does not cover src20: \d+ of \d+ parameters match by name and shape; "
                                        r"first that does not: 'classifier.weight' has shape \[10, 64\] in the "
                                        r"checkpoint, \[5, 64\] in the model; pass --ckpt_partial True"):
        load_pretrained(other, path, log=lines.append)
    lines = []
    load_pretrained(other, path, log=lines.append, partial=True)
    started = [line for line in lines if line.startswith("classifier initialised afresh")]
    assert len(started) == 1 and "'classifier.weight' has shape [10, 64] in the checkpoint, [5, 64]" in started[0]
    assert "classifier.bias" in started[0]
    assert re.search(r"\(\d+ entries\) \(\d+ of them set by the block conversion to keep the pretrained function: "
                     r"\d+ carry the checkpoint's values, e.g. \S*square_conv.weight from \S*conv1.weight; \d+ start "
                     r"branches switched off, e.g. \S*(hor|ver)_", lines[0]), lines[0]
    np.testing.assert_array_equal(other.layer1[0].conv1.square_conv.weight.asnumpy(),
                                  base.layer1[0].conv1.weight.asnumpy())


def test_finetuning_from_a_training_checkpoint_counts_the_optimizer_entries_it_leaves(tmp_path):
    """A training checkpoint carries the optimizer's slots and the trainer's scalars: the log counts them apart
    from the network's entries, so 'loaded N of N (N entries)' is not read as the whole file."""
    base = create_model("src20")
    params = {p.name: p.asnumpy() for p in base.get_parameters()}
    trainer = {f"moments.{name}": np.zeros_like(value) for name, value in params.items() if name.endswith("weight")}
    trainer.update(global_step=np.array([7], np.int32), learning_rate=np.array(0.1, np.float32))
    path = str(tmp_path / "train.ckpt")
    write_checkpoint(path, {**params, **trainer}, {"model": "src20"})
    lines = []
    load_pretrained(create_model("src20"), path, log=lines.append)
    assert lines[0] == (f"loaded {len(params)} of {len(params)} parameters from {path} ({len(params)} entries; "
                        f"{len(trainer)} optimizer and trainer entries not loaded)"), lines[0]


def test_a_block_parameter_made_from_a_checkpoint_entry_is_named_with_that_entry(tmp_path):
    """Another model's plain checkpoint: the block parameter that does not fit is named with the entry it was
    made from (the user's file holds conv1.weight, not conv1.square_conv.weight)."""
    other = create_model("resnet18", num_classes=10)
    path = str(tmp_path / "resnet18.ckpt")
    write_checkpoint(path, {p.name: p.asnumpy() for p in other.get_parameters()}, {"model": "resnet18"})
    with pytest.raises(UserError, match=r"first that does not: 'conv1.square_conv.weight' has shape \[64, 3, 7, 7\] "
                                        r"in the checkpoint \(made from its 'conv1.weight' by the block conversion\), "
                                        r"\[16, 3, 3, 3\] in the model"):
        load_pretrained(create_model("src20", block_type="acb"), path, log=lambda line: None)


@pytest.mark.slow
def test_finetune_from_the_command_line_logs_what_it_skipped(digits, tmp_path):
    base = create_model("src20", num_classes=7)
    path = str(tmp_path / "pretrained.ckpt")
    write_checkpoint(path, {p.name: p.asnumpy() for p in base.get_parameters()}, {"model": "src20"})
    # the finetuning recipe as docs/training.md gives it (ckpt_partial, top_k, validation from the recipe), on the
    # small digits with src20 at 16 px for time
    save = tmp_path / "ft"
    res = run_script("train.py", "--config", os.path.join(ROOT, "configs", "finetune_folder.yaml"), "--model", "src20",
                     "--block_type", "acb", "--data_dir", digits, "--train_list", "train_small.txt", "--val_list", "val_small.txt",
                     "--image_resize", 16, "--epoch_size", 1, "--decay_epochs", 1, "--warmup_epochs", 0,
                     "--num_parallel_workers", 1, "--ckpt_save_dir", save, "--ckpt_path", path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert sorted(f for f in os.listdir(save) if f.endswith(".ckpt")) == ["src20_acb-best.ckpt", "src20_acb-e001.ckpt"]
    assert re.search(r"epoch 1/1 done: .* val top1 [\d.]+ .*\(60 samples\)", res.stdout), res.stdout[-1500:]
    assert re.search(r"loaded \d+ of \d+ parameters from .*pretrained.ckpt \(\d+ entries\) \(\d+ of them set by "
                     r"the block conversion", res.stdout)
    assert ("classifier initialised afresh (ckpt_partial): 'classifier.weight' has shape [7, 64] in the checkpoint, "
            "[10, 64] in the model") in res.stdout


def test_finetuning_from_another_models_checkpoint_is_refused_in_one_line(digits, tmp_path):
    """A checkpoint that does not cover the model (another depth; another class count without ckpt_partial):
    one line with how many entries matched and the first that did not; nothing written."""
    other = create_model("src56", num_classes=10)
    path = str(tmp_path / "src56.ckpt")
    write_checkpoint(path, {p.name: p.asnumpy() for p in other.get_parameters()}, {"model": "src56"})
    save = tmp_path / "ft"
    res = run_main("train.py", *small_run(digits, str(save), "--ckpt_path", path))
    assert_one_line_error(res, f"{path}: the checkpoint (it records model src56) does not cover src20: ",
                          " parameters match by name and shape; first that does not: ")
    assert "ckpt_partial" not in res.stderr and not save.exists()
    seven = str(tmp_path / "seven.ckpt")
    base = create_model("src20", num_classes=7)
    write_checkpoint(seven, {p.name: p.asnumpy() for p in base.get_parameters()}, {"model": "src20"})
    res = run_main("train.py", *small_run(digits, str(save), "--ckpt_path", seven))
    assert_one_line_error(res, "first that does not: 'classifier.weight' has shape [7, 64] in the checkpoint, "
                          "[10, 64] in the model; pass --ckpt_partial True")
    assert not save.exists()


@pytest.mark.slow
def test_fixed_loss_scale_is_divided_back_out():
    """Loss scale 1024 with fixed scaling must update exactly like no scaling."""
    from acnet_ms.config.loader import defaults
    from acnet_ms.training.factories import build_train_step

    rng = np.random.default_rng(0)
    x = Tensor(rng.normal(size=(8, 3, 16, 16)).astype(np.float32))
    y = Tensor(rng.integers(0, 10, 8).astype(np.int32))
    weights = []
    for scale in (1.0, 1024.0):
        ms.set_seed(0)
        net = create_model("src20", block_type="acb")
        cfg = dict(defaults(), loss_scale=scale, device_target="CPU", lr=0.1)
        step, _ = build_train_step(net, cfg, [0.1] * 3)
        for _ in range(3):
            step(x, y)
        weights.append(net.conv1.square_conv.weight.asnumpy().copy())
    assert np.abs(weights[0]).max() > 0
    assert_close(weights[1], weights[0], 1e-4, "scaled vs unscaled update")


@pytest.mark.parametrize("extra,mode", [(["--mode", 1], "PyNative"), (["--amp_level", "O2", "--loss_scale", 1024], "graph")],
                         ids=["pynative", "amp_o2_loss_scale_1024"])
@pytest.mark.slow
def test_pynative_and_mixed_precision_runs(extra, mode, digits, tmp_path):
    res = run_script("train.py", *small_run(digits, str(tmp_path / "run"), "--epoch_size", 1,
                                            "--val_while_train", "False", *extra))
    assert res.returncode == 0, res.stderr[-2000:]
    assert_clean_exit(res)
    assert f"{mode} mode" in res.stdout
    losses = [float(v) for v in re.findall(r" loss ([\d.]+) lr", res.stdout)]
    assert len(losses) == 5 and all(0 < v < 10 for v in losses), losses  # finite: the scale is divided out
    assert FINISHED.search(res.stdout).group(1) == "5"


def read_until(proc, pattern, lines):
    for line in proc.stdout:
        lines.append(line)
        if re.search(pattern, line):
            return True
    return False


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(digits, tmp_path):
    args = ["--epoch_size", 3, "--val_while_train", "False", "--keep_checkpoint_max", 5]
    full = run_script("train.py", *small_run(digits, str(tmp_path / "full"), *args))
    assert full.returncode == 0, full.stderr[-2000:]
    steps, lr, _ = FINISHED.search(full.stdout).groups()
    assert int(steps) == 15

    save = str(tmp_path / "killed")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *map(str, small_run(digits, save, *args))],
                            cwd=ROOT, env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = []
    try:
        assert read_until(proc, r"^epoch 2/3 step 3/5 ", lines), "".join(lines)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert sorted(f for f in os.listdir(save) if f.endswith(".ckpt")) == ["src20_acb-e001.ckpt"]  # nothing partial
    assert not [f for f in os.listdir(save) if "tmp" in f]

    resumed = run_script("train.py", *small_run(digits, save, *args, "--resume", os.path.join(save,
                                                                                               "src20_acb-e001.ckpt")))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout and "epoch 1, step 5" in resumed.stdout
    assert [m[0] for m in PROGRESS.findall(resumed.stdout)] == ["2"] * 5 + ["3"] * 5
    assert FINISHED.search(resumed.stdout).groups() == FINISHED.search(full.stdout).groups()  # the same weights
    _, meta_full = read_checkpoint(os.path.join(str(tmp_path / "full"), "src20_acb-e003.ckpt"))
    arrays, meta = read_checkpoint(os.path.join(save, "src20_acb-e003.ckpt"))
    assert (meta["step"], meta["lr"]) == (meta_full["step"], meta_full["lr"])
    assert meta["step"] == 15 and meta["lr"] == pytest.approx(float(lr), abs=1e-8)
    assert int(arrays["global_step"].reshape(-1)[0]) == 15
    straight, _ = read_checkpoint(os.path.join(str(tmp_path / "full"), "src20_acb-e003.ckpt"))
    assert list(arrays) == list(straight)  # network, optimizer slots and all: bit for bit
    for name, value in straight.items():
        assert np.array_equal(arrays[name], value), name


@pytest.mark.slow
def test_a_second_run_into_a_used_folder_is_refused_and_changes_nothing(trained_run, digits):
    save, _ = trained_run
    before = {f: os.path.getmtime(os.path.join(save, f)) for f in os.listdir(save)}
    res = run_main("train.py", *small_run(digits, save, "--epoch_size", 1))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(
        rf"error: {re.escape(save)}: ckpt_save_dir holds an earlier run \(src20_acb-best.ckpt and \d+ more\), "
        rf"which this run would overwrite; choose another --ckpt_save_dir, or continue that run with "
        rf"--resume .*", lines[0]), lines
    assert {f: os.path.getmtime(os.path.join(save, f)) for f in os.listdir(save)} == before


@pytest.mark.slow
def test_a_resume_from_another_folder_into_a_used_folder_is_refused(trained_run, digits, tmp_path):
    save, _ = trained_run
    other = tmp_path / "other"
    other.mkdir()
    (other / "summary.jsonl").write_text('{"epoch": 1}\n')
    res = run_main("train.py", *small_run(digits, str(other), "--epoch_size", 3, "--resume",
                                          os.path.join(save, "src20_acb-e002.ckpt")))
    assert res.returncode == 2 and "ckpt_save_dir holds an earlier run (summary.jsonl)" in res.stderr
    assert (other / "summary.jsonl").read_text() == '{"epoch": 1}\n'


@pytest.mark.slow
def test_a_signal_stops_after_the_step_with_where_to_resume_then_resume_leaves_no_trace(digits, tmp_path):
    """SIGINT mid-epoch: one line, exit 130/143, no partial files; a stale temporary of an earlier kill is
    removed and resuming from an earlier epoch than the summary reached writes each epoch once."""
    save = str(tmp_path / "run")
    args = ["--val_while_train", "False", "--keep_checkpoint_max", 5]
    first = run_script("train.py", *small_run(digits, save, "--epoch_size", 2, *args))
    assert first.returncode == 0, first.stderr[-2000:]
    stale = os.path.join(save, ".src20_acb-e002.ckpt.4194999.tmp.ckpt")  # a pid above Linux's limit: dead
    open(stale, "wb").write(b"half a checkpoint")
    inner = os.path.join(save, ".src20_acb-e002.ckpt.4194999.tmp.tmp")  # MindSpore's own, of a write killed in it
    open(inner, "wb").write(b"half a checkpoint")

    cmd = [sys.executable, os.path.join(ROOT, "train.py"),
           *map(str, small_run(digits, save, "--epoch_size", 3, *args, "--resume",
                               os.path.join(save, "src20_acb-e001.ckpt")))]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    lines = []
    try:
        assert read_until(proc, r"^epoch 3/3 step 2/5 ", lines), "".join(lines)
        os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the whole process group
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    # MindSpore's runtime turns SIGINT during a running graph into SIGTERM: either is a clean stop
    assert proc.returncode in (130, 143), (proc.returncode, err[-2000:])
    assert "Traceback" not in err
    err_lines = [line for line in err.splitlines() if line.strip()]
    assert len(err_lines) == 1 and re.fullmatch(
        rf"stopped by SIG(INT|TERM) at epoch 3/3 step [2-5]/5; continue with --resume "
        rf"{re.escape(os.path.join(save, 'src20_acb-e002.ckpt'))}", err_lines[0]), err_lines
    assert not os.path.exists(stale) and not os.path.exists(inner)
    assert sorted(f for f in os.listdir(save) if "ckpt" in f) == ["src20_acb-e001.ckpt", "src20_acb-e002.ckpt"]
    epochs = [json.loads(line)["epoch"] for line in open(os.path.join(save, "summary.jsonl"))]
    assert epochs == [1, 2]  # epoch 2 was run again, and is there once

    done = run_script("train.py", *small_run(digits, save, "--epoch_size", 3, *args, "--resume",
                                             os.path.join(save, "src20_acb-e002.ckpt")))
    assert done.returncode == 0, done.stderr[-2000:]
    epochs = [json.loads(line)["epoch"] for line in open(os.path.join(save, "summary.jsonl"))]
    assert epochs == [1, 2, 3]


def make_bad(kind, digits, tmp_path):
    """(script, args, fragments of the one-line error) for one kind of bad input."""
    save = str(tmp_path / "run")
    if kind == "no_data_dir":
        return "train.py", small_run(str(tmp_path / "nowhere"), save), ["nowhere", "data_dir does not exist"]
    if kind == "no_split":
        return ("train.py", small_run(digits, save, "--train_list", "none", "--train_split", "training"),
                ["training", "split folder does not exist"])
    if kind in ("empty_class", "bad_image", "class_count"):
        root = tmp_path / "folder"
        for c in range(3):
            (root / "train" / f"c{c}").mkdir(parents=True)
            for i in range(12):
                os.link(os.path.join(digits, "train", str(c), sorted(os.listdir(os.path.join(digits, "train", str(c))))[i]),
                        root / "train" / f"c{c}" / f"{i}.png")
        base = ["--config", os.path.join(ROOT, "configs", "demo_digits.yaml"), "--data_dir", str(root),
                "--ckpt_save_dir", save, "--val_while_train", "False", "--num_parallel_workers", 1]
        if kind == "empty_class":
            (root / "train" / "c3").mkdir()
            return "train.py", base + ["--num_classes", 4], [str(root / "train" / "c3"), "empty class folder"]
        if kind == "class_count":
            return "train.py", base, ["3 classes but num_classes is 10"]
        (root / "train" / "c1" / "5.png").unlink()
        (root / "train" / "c1" / "5.png").write_bytes(b"this is not a PNG")
        return ("train.py", base + ["--num_classes", 3, "--batch_size", 4],
                [str(root / "train" / "c1" / "5.png") + ": cannot read image"])
    if kind == "unknown_key":
        bad = tmp_path / "typo.yaml"
        bad.write_text("model: src20\nwarmup_epoch: 2\n")
        return "train.py", ["--config", bad, "--data_dir", digits], ["typo.yaml", "'warmup_epoch'", "warmup_epochs"]
    if kind == "resume_other_model":
        ckpt = str(tmp_path / "other.ckpt")
        net = create_model("src56", block_type="acb")
        write_checkpoint(ckpt, {p.name: p.asnumpy() for p in net.get_parameters()},
                         dict(model="src56", block_type="acb", num_classes=10, epoch=1, step=5))
        return "train.py", small_run(digits, save, "--resume", ckpt), ["checkpoint of src56", "trains src20"]
    if kind == "missing_ckpt_path":
        return "train.py", small_run(digits, save, "--ckpt_path", tmp_path / "gone.ckpt"), ["gone.ckpt", "no such"]
    if kind == "missing_resume":
        return "train.py", small_run(digits, save, "--resume", tmp_path / "gone.ckpt"), ["gone.ckpt", "no such"]
    if kind == "pretrained":
        return "train.py", small_run(digits, save, "--pretrained", "True"), ["'pretrained'", "ckpt_path"]
    if kind == "download_missing":
        return ("train.py", small_run(str(tmp_path), save, "--dataset", "cifar10", "--dataset_download", "True"),
                ["'dataset_download'", "cifar-10-binary"])
    if kind == "odd_batch_mixup":
        return "train.py", small_run(digits, save, "--mixup", 0.2, "--batch_size", 7), ["batch_size must be even"]
    if kind == "top_k_without_validation":
        return ("train.py", small_run(digits, save, "--ckpt_save_policy", "top_k", "--val_while_train", "False"),
                ["top_k", "val_while_train"])
    if kind == "model_option_not_taken":
        return "train.py", small_run(digits, save, "--drop_path_rate", 0.1), ["src20", "drop_path_rate"]
    if kind == "bad_amp_cast_list":
        return "train.py", small_run(digits, save, "--amp_level", "O2", "--amp_cast_list", "[os.system]"), \
            ["amp_cast_list"]
    if kind == "distribute_without_launcher":
        return "train.py", small_run(digits, save, "--distribute", "True"), ["--distribute False", "msrun"]
    if kind == "validate_missing":
        return "validate.py", ["--ckpt_path", tmp_path / "gone.ckpt"], ["gone.ckpt", "no such file"]
    if kind == "validate_no_split":
        net = create_model("src20")
        ckpt = str(tmp_path / "plain.ckpt")
        write_checkpoint(ckpt, {p.name: p.asnumpy() for p in net.get_parameters()},
                         dict(model="src20", block_type="base", num_classes=10))
        return ("validate.py", ["--ckpt_path", ckpt, "--data_dir", digits, "--val_split", "valid"],
                ["valid", "split folder does not exist"])
    raise AssertionError(kind)


BAD = ["no_data_dir", "no_split", "empty_class", "bad_image", "class_count", "unknown_key", "resume_other_model",
       "missing_ckpt_path", "missing_resume", "pretrained", "download_missing", "odd_batch_mixup",
       "top_k_without_validation", "model_option_not_taken", "bad_amp_cast_list", "distribute_without_launcher",
       "validate_missing",
       "validate_no_split"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_input_is_one_line_with_nothing_lost(kind, digits, tmp_path):
    script, args, fragments = make_bad(kind, digits, tmp_path)
    save = tmp_path / "run"
    save.mkdir(exist_ok=True)
    (save / "notes.txt").write_bytes(b"the user's own file")  # must survive (an earlier run is refused first)
    # run from a folder of its own, where MindSpore would leave its strays (abnormal_image.*, rank_0/): the
    # checkout is every test worker's working folder, where another test's failed compilation may write a rank_0/
    work = tmp_path / "cwd"
    work.mkdir()
    # in this process, but for one case through a real process: train.py's output and exit status end to end
    res = (run_script if kind == "distribute_without_launcher" else run_main)(script, *args, cwd=work)
    assert_one_line_error(res, *fragments)
    assert (save / "notes.txt").read_bytes() == b"the user's own file"
    assert not [f for f in os.listdir(save) if f.endswith(".ckpt")]
    assert not os.listdir(work)  # no stray files


def test_a_run_stopped_before_its_first_checkpoint_says_its_folder_cannot_be_reused_as_is(digits, tmp_path):
    """Stopped with nothing saved: the line must not promise that the same command runs again (the folder
    holds its config and log, and a second run into it is refused)."""
    from acnet_ms.training.run import RunState
    from acnet_ms.training.setup import Stopped, stopped_line

    folder = str(tmp_path / "run")
    line = stopped_line(Stopped(signal.SIGTERM), RunState(), None, folder)
    assert "another --ckpt_save_dir" in line and folder in line and "\n" not in line
    os.makedirs(folder)
    with open(os.path.join(folder, "config.yaml"), "w") as f:
        f.write("model: src20\n")
    res = run_main("train.py", *small_run(digits, folder))
    assert_one_line_error(res, "ckpt_save_dir holds an earlier run")


def _renamed_digits(digits, root, names):
    """A val split of 3 digits a class whose class folders are called ``names`` (in label order 0..9)."""
    import shutil

    for label, name in enumerate(names):
        os.makedirs(os.path.join(root, "val", name))
        for image in sorted(os.listdir(os.path.join(digits, "val", str(label))))[:3]:
            shutil.copy(os.path.join(digits, "val", str(label), image), os.path.join(root, "val", name, image))
    return root


def test_validate_refuses_data_whose_class_folders_differ_from_training(digits, tmp_path):
    """The checkpoint records training's class folders: a folder named otherwise is one line naming the first
    difference, unless --any_class_names; the same names score."""
    path = str(tmp_path / "src20.ckpt")
    recipe = {"image_resize": 16, "crop_pct": 1.0, "interpolation": "bilinear", "num_parallel_workers": 1}
    training_checkpoint(path, "src20", meta={"class_names": [str(i) for i in range(10)], "config": recipe},
                        block_type="acb", gamma_init=1 / 3)
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    renamed = _renamed_digits(digits, str(tmp_path / "words"), words)
    res = run_main("validate.py", "--ckpt_path", path, "--data_dir", renamed)
    assert_one_line_error(res, f"{os.path.join(renamed, 'val')}: the class folders differ from those {path} was "
                          "trained on (label 0 is folder 'eight' here, '0' in training); pass --any_class_names")
    res = run_main("validate.py", "--ckpt_path", path, "--data_dir", renamed, "--any_class_names")
    assert res.returncode == 0 and res.stdout.strip().splitlines()[-1].endswith("samples=30"), res.stderr[-2000:]
    same = _renamed_digits(digits, str(tmp_path / "same"), [str(i) for i in range(10)])
    res = run_main("validate.py", "--ckpt_path", path, "--data_dir", same)
    assert res.returncode == 0, res.stderr[-2000:]


@pytest.mark.slow
def test_training_records_its_class_folders(digits, tmp_path):
    save = str(tmp_path / "run")
    res = run_main("train.py", "--config", os.path.join(ROOT, "configs", "demo_digits.yaml"), "--data_dir", digits,
                   "--ckpt_save_dir", save, "--epoch_size", 1, "--num_parallel_workers", 1, "--val_while_train",
                   "False")
    assert res.returncode == 0, res.stderr[-2000:]
    _, meta = read_checkpoint(os.path.join(save, "src20_acb-e001.ckpt"))
    assert meta["class_names"] == [str(i) for i in range(10)]


def test_errors_name_their_cause(digits, tmp_path):
    """A MindCV model that does not build in this MindSpore, and a repeated-augmentation sampler that leaves
    no batch: one line each saying so, nothing written."""
    import mindcv

    save = tmp_path / "run"
    res = run_main("train.py", *small_run(digits, str(save), "--model", "rexnet_10", "--block_type", "base"))
    assert_one_line_error(res, f"model rexnet_10 does not build in MindSpore {ms.__version__} with MindCV "
                          f"{mindcv.__version__} (", "docs/sweep.md")
    res = run_main("train.py", *small_run(digits, str(save), "--aug_repeats", 3, "--batch_size", 8))
    assert_one_line_error(res, "option 'aug_repeats' 3: MindCV's repeated-augmentation sampler takes whole rounds "
                          "of 256 of the 160 samples, 0 per device, which make no full batch of 8")
    assert not save.exists()


def _truncated_digits(digits, root):
    """The small lists' images with one PNG cut in half."""
    import shutil

    os.makedirs(root)
    for name in ("train_small.txt", "val_small.txt"):
        shutil.copy(os.path.join(digits, name), os.path.join(root, name))
    for split in ("train", "val"):
        shutil.copytree(os.path.join(digits, split), os.path.join(root, split))
    first = open(os.path.join(root, "train_small.txt")).readline().split()[0]
    path = os.path.join(root, first)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])
    return root


@pytest.mark.slow
@pytest.mark.parametrize("case", ["compile", "bad image", "input too small"])
def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing_behind(case, digits, tmp_path):
    """A train step that does not compile (lamb on CPU), an image that does not decode, an input too small for
    the model: one line saying so, and nothing of the run left (a folder that existed stays, empty), so the
    same command runs again.  No third-party warning line beside ours."""
    save = tmp_path / "run"
    data, extra, fragments = digits, [], []
    if case == "compile":
        save.mkdir()  # the user's own empty folder: it stays
        extra, fragments = ["--opt", "lamb"], ["does not compile or run on CPU", "Lamb"]
    elif case == "bad image":
        data = _truncated_digits(digits, str(tmp_path / "data"))
        fragments = ["data pipeline failed", "decode"]
    else:
        extra = ["--model", "inception_v3", "--image_resize", 96, "--batch_size", 4]
        fragments = ["image_resize 96 is too small for inception_v3: the smallest input it runs on is 299x299 "
                     "(found by running the model at each size; "]
    res = run_script("train.py", *small_run(data, str(save), "--epoch_size", 1, *extra), timeout=900)
    assert_one_line_error(res, *fragments)
    assert "WARN" not in res.stdout + res.stderr
    if case == "compile":
        assert os.listdir(save) == []
    else:
        assert not save.exists()


def test_the_training_pipeline_is_the_same_for_a_seed_whatever_the_scheduling(digits):
    """Random crops drawn by two parallel workers: the same batches every time the epoch's seed is set (each
    worker's draws follow its own seeded stream), so a seeded run does not depend on the machine's load;
    another worker count draws other crops."""
    import hashlib

    import mindspore.dataset as ds

    from acnet_ms.config.loader import parse
    from acnet_ms.engine import data
    from acnet_ms.training.loop import epoch_seed

    def digest(workers, times):
        cfg, _ = parse(["--config", os.path.join(ROOT, "configs", "demo_digits.yaml"), "--data_dir", digits,
                        "--train_list", "train_small.txt", "--num_parallel_workers", str(workers)], "test")
        spec = data.inspect(cfg, "train")
        loader = data.create_loader(dict(cfg, num_classes=10), spec, True, 0, 1, workers)
        out = []
        for _ in range(times):
            ds.config.set_seed(epoch_seed(cfg["seed"], 1))
            h = hashlib.sha256()
            for image, label in loader.create_tuple_iterator(num_epochs=1):
                h.update(image.asnumpy().tobytes() + label.asnumpy().tobytes())
            out.append(h.hexdigest())
        return out

    two = digest(2, 3)
    assert len(set(two)) == 1
    assert digest(1, 1)[0] != two[0]


def test_a_refusal_names_only_files_that_exist(tmp_path):
    """A folder holding an earlier run's config and log only: the line says so and offers no --resume; with
    epoch checkpoints, it names the last one."""
    from acnet_ms.training.setup import check_run_folder

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.yaml").write_text("model: src20\n")
    (folder / "train_rank0.log").write_text("")
    with pytest.raises(UserError) as err:
        check_run_folder({"ckpt_save_dir": str(folder), "resume": None})
    assert "or remove those files (they hold no checkpoint to resume)" in str(err.value)
    assert "--resume" not in str(err.value) and "<" not in str(err.value)
    for epoch in (2, 10):
        (folder / f"src20_acb-e{epoch:03d}.ckpt").write_bytes(b"")
    last = folder / "src20_acb-e010.ckpt"
    with pytest.raises(UserError, match=re.escape(f"continue that run with --resume {last}")):
        check_run_folder({"ckpt_save_dir": str(folder), "resume": None})


def test_class_names_check_names_the_first_difference():
    from acnet_ms.engine.data import DataSpec, check_class_names

    spec = DataSpec("folder", "/data/val", 30, 3, class_names=["cat", "dog", "fox"])
    check_class_names(spec, ["cat", "dog", "fox"], "x.ckpt", "--any_class_names")
    check_class_names(spec, None, "x.ckpt", "--any_class_names")  # nothing recorded: nothing to compare
    with pytest.raises(UserError, match=r"^/data/val: the class folders differ from those x.ckpt was trained on "
                                        r"\(label 1 is folder 'dog' here, 'cow' in training\); pass "
                                        r"--any_class_names to score anyway$"):
        check_class_names(spec, ["cat", "cow", "fox"], "x.ckpt", "--any_class_names")
    with pytest.raises(UserError, match=r"3 class folders here, 4 in training"):
        check_class_names(spec, ["cat", "dog", "fox", "gnu"], "x.ckpt", "--any_class_names")
