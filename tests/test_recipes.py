"""A MindCV-shaped recipe file (every option group, MindCV's keys only) trains base and ACB, and converts."""
import os
import re

import pytest
from helpers import assert_clean_exit, run_script

from acnet_ms.io.checkpoint import read_checkpoint

# Written for this test in the layout of MindCV's configs/<family>/*.yaml; the
# model is one the registry builds and the sizes fit the digits.
RECIPE = """\
# system config
mode: 0
distribute: True
num_parallel_workers: 8
val_while_train: True
val_interval: 1
log_interval: 5
seed: 7

# dataset config
dataset: 'imagenet'
data_dir: ''
train_split: 'train'
val_split: 'val'
shuffle: True
dataset_download: False
num_samples: 160
batch_size: 32
drop_remainder: True
eval_shuffle: False

# augmentation config
image_resize: 16
scale: [0.7, 1.0]
ratio: [0.85, 1.18]
hflip: 0.0
vflip: 0.0
color_jitter: [0.2, 0.2, 0.2]
interpolation: 'bilinear'
re_prob: 0.25
re_value: 'random'
crop_pct: 1.0
mixup: 0.2
cutmix: 0.0
cutmix_prob: 1.0
aug_repeats: 0

# model config
model: 'src20'
num_classes: 10
in_channels: 3
pretrained: False
ckpt_path: ''
keep_checkpoint_max: 2
ckpt_save_dir: '{save}'
ckpt_save_interval: 1
ckpt_save_policy: 'latest_k'
epoch_size: 1
dataset_sink_mode: True
ema: True
ema_decay: 0.9
clip_grad: True
clip_value: 5.0
gradient_accumulation_steps: 1

# loss config
loss: 'CE'
label_smoothing: 0.1
aux_factor: 0.0
reduction: 'mean'

# lr scheduler config
scheduler: 'warmup_cosine_decay'
lr: 0.1
min_lr: 1e-6
warmup_epochs: 0
warmup_factor: 0.0
decay_epochs: 1
lr_epoch_stair: False

# optimizer config
opt: 'momentum'
filter_bias_and_bn: True
momentum: 0.9
weight_decay: 1e-4
use_nesterov: True
eps: 1e-10

# precision
amp_level: 'O2'
val_amp_level: 'O0'
loss_scale_type: 'dynamic'
loss_scale: 1024
drop_overflow_update: True
"""

TOP1 = re.compile(r"top1=(\d\.\d{4}) ")


@pytest.fixture(scope="module")
def recipe_runs(digits, tmp_path_factory):
    runs = {}
    for block in ("base", "acb"):
        root = tmp_path_factory.mktemp(block)
        path = root / "recipe.yaml"
        path.write_text(RECIPE.format(save=root / "ckpt") + (f"block_type: {block}\n" if block == "acb" else ""))
        res = run_script("train.py", "--config", path, "--data_dir", digits, "--distribute", "False")
        runs[block] = (root / "ckpt", res)
    return runs


@pytest.mark.parametrize("block", ["base", "acb"])
@pytest.mark.slow
def test_a_mindcv_recipe_trains_with_only_the_data_location_changed(recipe_runs, block):
    save, res = recipe_runs[block]
    assert res.returncode == 0, res.stderr[-3000:]
    assert_clean_exit(res)
    assert f"src20 ({block})" in res.stdout
    assert "epoch 1/1 step 5/5" in res.stdout  # num_samples 160 in batches of 32
    assert re.search(r"epoch 1/1 done: .* \(359 samples\)", res.stdout)
    _, meta = read_checkpoint(os.path.join(save, f"src20_{block}-e001.ckpt"))
    assert meta["block_type"] == block and meta["config"]["weight_decay_filter"] == "norm_and_bias"
    assert meta["config"]["loss_scale_type"] == "dynamic" and meta["ema_in_model_slots"]


@pytest.mark.slow
def test_the_acb_recipe_checkpoint_converts_to_the_plain_model(recipe_runs, digits, tmp_path):
    save, res = recipe_runs["acb"]
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = os.path.join(save, "src20_acb-e001.ckpt")
    out = str(tmp_path / "plain.ckpt")
    conv = run_script("convert.py", "--ckpt_path", ckpt, "--output", out)
    assert conv.returncode == 0, conv.stderr[-2000:]
    args = ["--data_dir", digits, "--num_parallel_workers", 1]
    acb = run_script("validate.py", "--ckpt_path", ckpt, *args)
    plain = run_script("validate.py", "--ckpt_path", out, *args)
    assert acb.returncode == 0 and plain.returncode == 0, (acb.stderr[-1500:], plain.stderr[-1500:])
    in_run = re.search(r"val top1 ([\d.]+)", res.stdout).group(1)
    assert TOP1.search(acb.stdout).group(1) == TOP1.search(plain.stdout).group(1) == in_run
    arrays, meta = read_checkpoint(out)
    assert meta["block_type"] == "base" and not any("square_conv" in k for k in arrays)
