"""The end of each epoch as callbacks (MindCV's ``StateMonitor`` role, one concern each as mmpretrain's hooks).

:class:`EpochEnd` hands one :class:`EpochRecord` to its callbacks in order:
BN statistics made equal across ranks, validation, the summary line, the
checkpoints.  With EMA the averaged weights are what is validated and saved
(as MindCV does): :class:`EmaWeights` swaps them into the model around the
callbacks, and the file keeps the online weights under ``ema.*`` for ``--resume``.
"""
import json
import os
from dataclasses import dataclass, field

import numpy as np

from ..engine.evaluation import evaluate
from ..reparam.transform import block_layout
from .checkpoints import training_meta


@dataclass
class EpochRecord:
    """One epoch's end: ``summary`` is its line of ``summary.jsonl``, ``line`` its log line so far."""
    epoch: int
    step: int
    validate: bool
    save: bool
    summary: dict = field(default_factory=dict)
    line: str = ""

    @property
    def needs_weights(self):
        """Whether the weights are read (validated or saved): only then are EMA and BN statistics put in place."""
        return self.validate or self.save


def sync_bn_statistics(net, mode, world):
    """Make every rank's BN moving statistics the same: ``reduce`` averages them, ``broadcast`` takes rank 0's."""
    import mindspore as ms

    if world <= 1 or mode == "none":
        return
    from mindspore.communication import get_rank

    params = [p for p in net.get_parameters() if p.name.endswith(("moving_mean", "moving_variance"))]
    if not params:
        return
    flat = np.concatenate([p.asnumpy().astype(np.float32).ravel() for p in params])
    if mode == "broadcast":
        flat = flat * (1.0 if get_rank() == 0 else 0.0)
    total = ms.ops.AllReduce()(ms.Tensor(flat)).asnumpy()
    if mode == "reduce":
        total = total / world
    offset = 0
    for p in params:
        n = int(np.prod(p.shape)) if p.shape else 1
        p.set_data(ms.Tensor(total[offset:offset + n].reshape(p.shape).astype(ms.dtype_to_nptype(p.dtype))))
        offset += n


def copy_weights(src, dst):
    """Every parameter of ``src`` into the same-named one of ``dst`` (no-op when they are one network)."""
    import mindspore as ms

    if src is dst:
        return
    values = {p.name: p for p in src.get_parameters()}
    for p in dst.get_parameters():
        p.set_data(ms.Tensor(values[p.name].asnumpy().astype(ms.dtype_to_nptype(p.dtype))))


class EmaWeights:
    """``with EmaWeights(step_cell):`` the EMA weights sit in the model, the online ones are back afterwards."""

    def __init__(self, step_cell):
        self.step_cell = step_cell

    def __enter__(self):
        self.step_cell.swap_ema()
        return self

    def __exit__(self, *exc):
        self.step_cell.swap_ema()
        return False


class SyncBatchNorm:
    """``dist_bn``: equal BN statistics on every rank before they are validated or saved."""

    def __init__(self, net, mode, world):
        self.net, self.mode, self.world = net, mode, world

    def __call__(self, record):
        if record.needs_weights:
            sync_bn_statistics(self.net, self.mode, self.world)


class Validation:
    """Top-1 / top-5 / loss on the validation split, at ``val_amp_level`` (``eval_net``, given the weights)."""

    def __init__(self, net, eval_net, loader, world):
        self.net, self.eval_net, self.loader, self.world = net, eval_net or net, loader, world

    def __call__(self, record):
        if not record.validate:
            return
        copy_weights(self.net, self.eval_net)
        metrics = evaluate(self.eval_net, self.loader, self.world)
        self.net.set_train(True)
        record.summary.update(val_top1=metrics["top1"], val_top5=metrics["top5"], val_loss=metrics["loss"])
        record.line += (f"; val top1 {metrics['top1']:.4f} top5 {metrics['top5']:.4f} loss {metrics['loss']:.4f} "
                        f"({metrics['samples']} samples)")


class Summary:
    """The epoch's log line, and (rank 0) its line of ``summary.jsonl`` in the run folder."""

    def __init__(self, folder, rank, log):
        self.path, self.rank, self.log = os.path.join(folder, "summary.jsonl"), rank, log

    def __call__(self, record):
        self.log(record.line)
        if self.rank == 0:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record.summary) + "\n")


class Saving:
    """Rank 0: the epoch's checkpoint when the plan saves, and the ``-best`` one when validation top-1 improved.

    The run's state (:class:`~acnet_ms.training.run.RunState`) keeps the best
    top-1 and the paths written.
    """

    def __init__(self, cfg, step_cell, net, ckpts, state, rank, class_names=None):
        self.cfg, self.step_cell, self.ckpts, self.state, self.rank = cfg, step_cell, ckpts, state, rank
        self.class_names = class_names
        self.layout = block_layout(net) or None  # where each block's fold goes: convert.py needs nothing else

    def __call__(self, record):
        if self.rank != 0 or not record.needs_weights:
            return
        state, top1 = self.state, record.summary.get("val_top1")
        improved = top1 is not None and (state.best_top1 is None or top1 > state.best_top1)
        if improved:
            state.best_top1 = top1
        meta = training_meta(self.cfg, self.layout, record.epoch, record.step, record.summary["lr"], state.best_top1,
                             top1, self.step_cell.scaler_state(), self.class_names)
        if record.save:
            state.last_saved = self.ckpts.save(self.step_cell, meta)
        if improved:
            state.best_saved = self.ckpts.save(self.step_cell, meta, best=True)


class EpochEnd:
    """``end(epoch, step, mean_loss, seconds)`` after each epoch: the callbacks in order on one record."""

    def __init__(self, plan, step_cell, callbacks):
        self.plan, self.step_cell, self.callbacks = plan, step_cell, list(callbacks)

    def __call__(self, epoch, step, mean_loss, seconds):
        plan = self.plan
        record = EpochRecord(epoch, step, validate=plan.validates(epoch), save=plan.saves(epoch),
                             summary=dict(epoch=epoch, step=step, loss=mean_loss, lr=plan.lr_at(step), seconds=seconds),
                             line=f"epoch {epoch}/{plan.epochs} done: mean loss {mean_loss:.4f}, {seconds:.1f} s")
        if not record.needs_weights:
            self._run(record)
        else:
            with EmaWeights(self.step_cell):
                self._run(record)
        return record.summary

    def _run(self, record):
        for callback in self.callbacks:
            callback(record)
