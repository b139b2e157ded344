"""A run's checkpoints: what they record, which of them stay, and resuming from one.

Reading and writing a ``.ckpt`` (atomically) is :mod:`acnet_ms.io.checkpoint`'s.
"""
import glob
import os
import re

from ..io.checkpoint import mismatch, read_checkpoint, shapes_of, write_checkpoint
from ..cli import UserError
from ..config.loader import IDENTITY
from ..reparam.layout import as_layout
from ..stack import versions


def identity_of(cfg):
    """The options that say which network a checkpoint holds (model, block type, classes, ...)."""
    return {k: cfg[k] for k in IDENTITY}


def training_meta(cfg, layout, epoch, step, lr, best_top1, val_top1, scaler_state, class_names=None):
    """The metadata of a training checkpoint: what ``--resume``, validate.py and convert.py read back.

    ``layout``: the network's block layout (where each block's fold goes; convert.py needs nothing else),
    stored as its versioned schema (:meth:`acnet_ms.reparam.layout.Layout.to_meta`);
    ``config``: the run's resolved options; with EMA the averaged weights sit
    in the model's slots (``ema_in_model_slots``); ``class_names``: the training
    data's class folders in label order (validate.py and calibration compare them); ``stack``: the
    versions it was trained with (:func:`acnet_ms.stack.versions`).
    """
    extra = dict(class_names=list(class_names)) if class_names else {}
    return dict(identity_of(cfg), block_layout=as_layout(layout).to_meta() if layout else None, epoch=epoch,
                step=step, lr=lr, best_top1=best_top1, val_top1=val_top1, ema_in_model_slots=bool(cfg["ema"]),
                config=dict(cfg), stack=versions(cfg["device_target"]), **extra, **scaler_state)


class Checkpoints:
    """Rank 0's checkpoint folder: ``<model>_<block>-e<epoch>.ckpt`` and ``<model>_<block>-best.ckpt``.

    ``policy`` (MindCV's ``ckpt_save_policy``): ``latest_k`` keeps the newest
    ``keep`` epoch checkpoints, ``top_k`` the ``keep`` with the best validation
    top-1 (the newer wins a tie), ``None`` all of them.  The ``-best`` file is
    kept apart in every case.
    """

    def __init__(self, folder, prefix, keep, policy="latest_k"):
        self.folder, self.prefix, self.keep, self.policy = folder, prefix, keep, policy
        self.scores = {}  # path -> validation top-1, for top_k

    @property
    def best_file(self):
        return os.path.join(self.folder, f"{self.prefix}-best.ckpt")

    def epoch_files(self):
        pattern = re.compile(re.escape(self.prefix) + r"-e(\d+)\.ckpt$")
        found = [(int(m.group(1)), f) for f in glob.glob(os.path.join(self.folder, self.prefix + "-e*.ckpt"))
                 if (m := pattern.search(os.path.basename(f)))]
        return [f for _, f in sorted(found)]

    def to_remove(self, files, scores):
        """The epoch files the policy drops, given all of them (oldest first) and their scores."""
        if self.policy is None or self.keep <= 0 or len(files) <= self.keep:
            return []
        if self.policy == "top_k":
            ranked = sorted(files, key=lambda f: (scores.get(f, float("-inf")), files.index(f)), reverse=True)
            kept = set(ranked[:self.keep])
            return [f for f in files if f not in kept]
        return files[:-self.keep]

    def save(self, cell, meta, best=False):
        path = self.best_file if best else os.path.join(self.folder, f"{self.prefix}-e{meta['epoch']:03d}.ckpt")
        write_checkpoint(path, cell, meta)
        if not best:
            self.scores[path] = meta.get("val_top1")
            if self.policy == "top_k":
                for f in self.epoch_files():
                    if f not in self.scores:
                        self.scores[f] = read_checkpoint(f)[1].get("val_top1")
            for old in self.to_remove(self.epoch_files(), {k: v for k, v in self.scores.items() if v is not None}):
                os.remove(old)
                self.scores.pop(old, None)
        return path


def check_resume(cfg):
    """Read a ``--resume`` checkpoint's metadata and check it belongs to this run (before anything is written)."""
    path = cfg["resume"]
    _, meta = read_checkpoint(path)
    if "epoch" not in meta or "step" not in meta:
        raise UserError(f"{path}: not a training checkpoint (no epoch/step recorded); "
                        f"use ckpt_path to start from plain weights")
    was = (meta.get("config") or {}).get("repopt_scales")
    if bool(was) != bool(cfg.get("repopt_scales")):
        raise UserError(f"{path}: a RepOpt run's checkpoint (repopt_scales {was}): resume it with the same "
                        f"repopt_scales" if was else f"{path}: not a RepOpt run's checkpoint; resume it without "
                        f"repopt_scales")
    mine = {k: cfg[k] for k in ("model", "block_type", "num_classes")}
    theirs = {k: meta.get(k) for k in mine}
    if mine != theirs:
        raise UserError(f"{path}: checkpoint of {theirs['model']} (block_type {theirs['block_type']}, "
                        f"{theirs['num_classes']} classes) but this run trains {mine['model']} "
                        f"(block_type {mine['block_type']}, {mine['num_classes']} classes)")
    return meta


def restore(step_cell, cfg, steps_per_epoch, log):
    """Load a ``--resume`` checkpoint into the train step; return (start_epoch, global_step, meta)."""
    import mindspore as ms

    path = cfg["resume"]
    meta = check_resume(cfg)
    arrays, _ = read_checkpoint(path)
    # the schedule comes from the config; its position from the restored global_step
    arrays = {k: v for k, v in arrays.items() if k != "learning_rate"}
    shapes = {k: v for k, v in shapes_of(step_cell).items() if k != "learning_rate"}
    problem = mismatch(arrays, shapes, allow_extra=True)
    if problem:
        raise UserError(f"{path}: cannot resume: {problem}")
    ms.load_param_into_net(step_cell, {k: ms.Parameter(ms.Tensor(v), name=k) for k, v in arrays.items()})
    if meta.get("ema_in_model_slots"):
        step_cell.swap_ema()  # the file holds the EMA under the model's names, the online weights under ema.*
    step_cell.load_scaler_state(meta)
    epoch, step = int(meta["epoch"]), int(meta["step"])
    if step != epoch * steps_per_epoch:
        log(f"warning: the checkpoint has {step} steps after {epoch} epochs, this run has {steps_per_epoch} "
            f"steps per epoch (batch size or device count changed); the schedule continues from step {step}")
    log(f"resumed from {path}: epoch {epoch}, step {step}")
    return epoch, step, meta
