"""Training and evaluation: context, train step, loop, checkpoints, resume, progress."""
import glob
import hashlib
import json
import os
import re
import time

import numpy as np

from . import data
from .checkpoint import load_pretrained, mismatch, read_checkpoint, shapes_of, write_checkpoint
from .cli import UserError, first_line
from .config import IDENTITY, dump


# ---------------------------------------------------------------- context

def setup(cfg, log=print):
    """Configure MindSpore from ``cfg``; initialise collectives when distributed. Returns (rank, world)."""
    import mindspore as ms
    import mindspore.dataset as ds

    graph = cfg["mode"] == 0
    ms.set_context(mode=ms.GRAPH_MODE if graph else ms.PYNATIVE_MODE)
    target = cfg["device_target"] or ms.get_context("device_target")
    try:
        ms.set_device(target)
    except (RuntimeError, ValueError) as err:
        raise UserError(f"device_target {target} is not usable here ({first_line(err)})") from None
    cfg["device_target"] = target
    if graph:
        level = cfg["jit_level"]
        if level == "O2" and target == "GPU":
            log("jit_level O2 is Ascend's whole-graph level; GPU runs O1")
            level = "O1"
        try:
            ms.set_context(jit_config={"jit_level": level})
        except (RuntimeError, ValueError, TypeError) as err:
            log(f"jit_level {level} not accepted on {target} ({first_line(err)}); using O0")
            ms.set_context(jit_config={"jit_level": "O0"})
    rank, world = 0, 1
    if cfg["distribute"]:
        from mindspore.communication import get_group_size, get_rank, init

        try:
            init()
        except RuntimeError as err:
            raise UserError(f"distribute: True needs a launcher such as msrun ({first_line(err)})") \
                from None
        rank, world = get_rank(), get_group_size()
        ms.reset_auto_parallel_context()
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                     device_num=world)
    ms.set_seed(cfg["seed"])  # the same on every rank: identical initial weights
    ds.config.set_seed(cfg["seed"])
    return rank, world


class RunLog:
    """One log file per rank in the run folder; rank 0 also prints."""

    def __init__(self, folder, rank, echo):
        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, f"train_rank{rank}.log")
        self.file = open(self.path, "a", encoding="utf-8")
        self.echo = echo

    def __call__(self, message):
        self.file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        self.file.flush()
        if self.echo:
            print(message, flush=True)

    def close(self):
        self.file.close()


# ---------------------------------------------------------------- pieces

def lr_schedule(cfg, steps_per_epoch):
    """Per-step learning rates (a list, one per optimizer step) from mindcv's scheduler factory."""
    from mindcv.scheduler import create_scheduler

    decay = cfg["decay_epochs"] or max(1, cfg["epoch_size"] - cfg["warmup_epochs"])
    lrs = create_scheduler(steps_per_epoch, scheduler=cfg["scheduler"], lr=cfg["lr"], min_lr=cfg["min_lr"],
                           warmup_epochs=cfg["warmup_epochs"], warmup_factor=cfg["warmup_factor"],
                           decay_epochs=decay, decay_rate=cfg["decay_rate"],
                           milestones=cfg["multi_step_decay_milestones"], num_epochs=cfg["epoch_size"],
                           lr_epoch_stair=cfg["lr_epoch_stair"])
    return [float(v) for v in lrs]


def build_train_step(net, cfg, lrs):
    """The compiled train step: loss, optimizer, AMP and loss scaling, data-parallel reduction.

    With a fixed loss scale that never skips updates, gradients come back
    multiplied by the scale and the optimizer divides them by the same
    number; with overflow-checking scales (dynamic, or fixed with
    ``drop_overflow_update``) the step unscales the gradients itself and the
    optimizer's scale is 1.  Either way the update is that of an unscaled step.
    """
    import mindspore as ms
    from mindcv.loss import create_loss
    from mindcv.optim import create_optimizer

    checks_overflow = cfg["loss_scale_type"] == "dynamic" or cfg["drop_overflow_update"]
    if checks_overflow and cfg["device_target"] == "CPU":
        raise UserError("loss_scale_type: dynamic and drop_overflow_update: True need Ascend or GPU "
                        "(MindSpore's CPU backend has no overflow check); use a fixed loss_scale on CPU")
    if cfg["loss_scale"] < 1:
        raise UserError(f"option 'loss_scale' must be >= 1, got {cfg['loss_scale']}")
    optimizer = create_optimizer(net, opt=cfg["opt"], lr=lrs, weight_decay=cfg["weight_decay"],
                                 momentum=cfg["momentum"], nesterov=cfg["nesterov"],
                                 weight_decay_filter=cfg["weight_decay_filter"],
                                 loss_scale=1.0 if checks_overflow else cfg["loss_scale"])
    loss = create_loss(name=cfg["loss"], label_smoothing=cfg["label_smoothing"])
    if cfg["loss_scale_type"] == "dynamic":
        manager = ms.amp.DynamicLossScaleManager(cfg["loss_scale"], scale_factor=2, scale_window=2000)
    else:
        manager = ms.amp.FixedLossScaleManager(cfg["loss_scale"], drop_overflow_update=cfg["drop_overflow_update"])
    step = ms.amp.build_train_network(net, optimizer, loss, level=cfg["amp_level"], loss_scale_manager=manager)
    step.set_train()
    return step, optimizer


def evaluate(net, loader, world=1, transform=None):
    """Top-1 / top-5 counts, summed loss and sample count over the whole split (summed over ranks).

    ``transform``, if given, maps each batch of images (a numpy NCHW array, after
    the loader's own transforms) to the batch the network sees.
    """
    import mindspore as ms

    net.set_train(False)
    totals = np.zeros(4)
    try:
        for image, label in loader.create_tuple_iterator(num_epochs=1):
            if transform is not None:
                image = ms.Tensor(np.ascontiguousarray(transform(image.asnumpy())))
            logits = net(image).asnumpy().astype(np.float64)
            y = label.asnumpy().astype(np.int64)
            k = min(5, logits.shape[1])
            topk = np.argsort(-logits, axis=1)[:, :k]
            shifted = logits - logits.max(axis=1, keepdims=True)
            logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            totals += (np.sum(topk[:, 0] == y), np.sum((topk == y[:, None]).any(axis=1)),
                       -logp[np.arange(len(y)), y].sum(), len(y))
    except RuntimeError as err:
        raise data.pipeline_error(err) or err from None
    if world > 1:
        totals = ms.ops.AllReduce()(ms.Tensor(totals.astype(np.float32))).asnumpy().astype(np.float64)
    correct1, correct5, loss_sum, n = totals
    n = int(round(n))
    return dict(top1=correct1 / n, top5=correct5 / n, loss=loss_sum / n, samples=n,
                correct1=int(round(correct1)))


def weights_digest(net):
    """sha256 of the trainable parameters: equal on every rank of a data-parallel run."""
    h = hashlib.sha256()
    for param in net.trainable_params():
        h.update(param.asnumpy().tobytes())
    return h.hexdigest()[:16]


def identity_of(cfg):
    return {k: cfg[k] for k in IDENTITY}


# ---------------------------------------------------------------- checkpoints

class Checkpoints:
    """Rank 0's checkpoint folder: ``<model>_<block>-e<epoch>.ckpt`` (at most ``keep`` of them) and ``-best``."""

    def __init__(self, folder, prefix, keep):
        self.folder, self.prefix, self.keep = folder, prefix, keep

    def epoch_files(self):
        pattern = re.compile(re.escape(self.prefix) + r"-e(\d+)\.ckpt$")
        found = [(int(m.group(1)), f) for f in glob.glob(os.path.join(self.folder, self.prefix + "-e*.ckpt"))
                 if (m := pattern.search(os.path.basename(f)))]
        return [f for _, f in sorted(found)]

    def save(self, cell, meta, best=False):
        name = f"{self.prefix}-best.ckpt" if best else f"{self.prefix}-e{meta['epoch']:03d}.ckpt"
        path = os.path.join(self.folder, name)
        write_checkpoint(path, cell, meta)
        if not best:
            for old in self.epoch_files()[:-self.keep] if self.keep > 0 else []:
                os.remove(old)
        return path


def restore(step_cell, cfg, steps_per_epoch, log):
    """Load a ``--resume`` checkpoint into the train step; return (start_epoch, global_step, meta)."""
    import mindspore as ms

    path = cfg["resume"]
    arrays, meta = read_checkpoint(path)
    if "epoch" not in meta or "step" not in meta:
        raise UserError(f"{path}: not a training checkpoint (no epoch/step recorded); "
                        f"use ckpt_path to start from plain weights")
    mine = {k: cfg[k] for k in ("model", "block_type", "num_classes")}
    theirs = {k: meta.get(k) for k in mine}
    if mine != theirs:
        raise UserError(f"{path}: checkpoint of {theirs['model']} (block_type {theirs['block_type']}, "
                        f"{theirs['num_classes']} classes) but this run trains {mine['model']} "
                        f"(block_type {mine['block_type']}, {mine['num_classes']} classes)")
    # the schedule comes from the config; its position from the restored global_step
    arrays = {k: v for k, v in arrays.items() if k != "learning_rate"}
    shapes = {k: v for k, v in shapes_of(step_cell).items() if k != "learning_rate"}
    problem = mismatch(arrays, shapes, allow_extra=True)
    if problem:
        raise UserError(f"{path}: cannot resume: {problem}")
    ms.load_param_into_net(step_cell, {k: ms.Parameter(ms.Tensor(v), name=k) for k, v in arrays.items()})
    epoch, step = int(meta["epoch"]), int(meta["step"])
    if step != epoch * steps_per_epoch:
        log(f"warning: the checkpoint has {step} steps after {epoch} epochs, this run has {steps_per_epoch} "
            f"steps per epoch (batch size or device count changed); the schedule continues from step {step}")
    log(f"resumed from {path}: epoch {epoch}, step {step}")
    return epoch, step, meta


# ---------------------------------------------------------------- training

def _fmt_time(seconds):
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def train(cfg):
    """Run the training that ``cfg`` describes. Returns a summary dict."""
    from .models import model_entry

    try:
        model_entry(cfg["model"])
    except ValueError as err:
        raise UserError(str(err)) from None
    for key in ("batch_size", "epoch_size", "log_interval", "ckpt_save_interval", "val_interval"):
        if cfg[key] < 1:
            raise UserError(f"option '{key}' must be >= 1, got {cfg[key]}")
    for key in ("ckpt_path", "resume"):
        if cfg[key] and not os.path.isfile(cfg[key]):
            raise UserError(f"{cfg[key]}: no such checkpoint file ({key})")
    train_spec = data.inspect(cfg, "train")
    data.check_num_classes(train_spec, cfg["num_classes"], "train")
    val_spec = None
    if cfg["val_while_train"]:
        val_spec = data.inspect(cfg, "val")
        data.check_num_classes(val_spec, cfg["num_classes"], "validation")

    folder = cfg["ckpt_save_dir"]
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise UserError(f"{folder}: cannot create ckpt_save_dir ({err.strerror})") from None
    early = []
    rank, world = setup(cfg, log=early.append)
    log = RunLog(folder, rank, echo=rank == 0)
    for line in early:
        log(line)
    try:
        return _train(cfg, rank, world, train_spec, val_spec, log)
    finally:
        log.close()


def _train(cfg, rank, world, train_spec, val_spec, log):
    import mindspore.dataset as ds

    from .models import create_model

    folder = cfg["ckpt_save_dir"]
    if rank == 0:
        dump(cfg, os.path.join(folder, "config.yaml"))
    log(f"{cfg['model']} ({cfg['block_type']}), {cfg['num_classes']} classes; {train_spec.num_samples} training "
        f"samples from {train_spec.root}; {world} device(s) on {cfg['device_target']}, "
        f"{'graph' if cfg['mode'] == 0 else 'PyNative'} mode")
    train_loader = data.create_loader(cfg, train_spec, True, rank, world)
    spe = train_loader.get_dataset_size()
    if spe == 0:
        raise UserError(f"{train_spec.root}: {train_spec.num_samples} samples make no full batch of "
                        f"{cfg['batch_size']} per device")
    val_loader = data.create_loader(cfg, val_spec, False, rank, world) if val_spec else None

    net = create_model(cfg["model"], num_classes=cfg["num_classes"], block_type=cfg["block_type"],
                       gamma_init=cfg["gamma_init"])
    if cfg["ckpt_path"]:
        load_pretrained(net, cfg["ckpt_path"], log)
    lrs = lr_schedule(cfg, spe)
    step_cell, _ = build_train_step(net, cfg, lrs)
    start_epoch, gstep, best = 0, 0, None
    if cfg["resume"]:
        start_epoch, gstep, meta = restore(step_cell, cfg, spe, log)
        best = meta.get("best_top1")
    epochs = cfg["epoch_size"]
    total = epochs * spe
    ckpts = Checkpoints(folder, f"{cfg['model']}_{cfg['block_type']}", cfg["keep_checkpoint_max"])
    last_path = best_path = None
    if best is not None and os.path.isfile(os.path.join(folder, f"{ckpts.prefix}-best.ckpt")):
        best_path = os.path.join(folder, f"{ckpts.prefix}-best.ckpt")
    if start_epoch >= epochs:
        log(f"nothing to do: the checkpoint already has {start_epoch} of {epochs} epochs")

    def lr_at(step):
        return lrs[min(step, len(lrs)) - 1] if step else float("nan")

    ds.config.set_seed(cfg["seed"] + start_epoch)  # a resumed run does not replay epoch 0's order
    iterator = train_loader.create_tuple_iterator(num_epochs=max(1, epochs - start_epoch))
    run_start, run_steps = time.perf_counter(), 0
    images_per_step = cfg["batch_size"] * world
    for epoch in range(start_epoch, epochs):
        epoch_start = tick = time.perf_counter()
        loss_sum, i = None, 0
        try:
            for i, (image, label) in enumerate(iterator, 1):
                out = step_cell(image, label)
                loss = out[0] if isinstance(out, tuple) else out
                loss_sum = loss if loss_sum is None else loss_sum + loss
                gstep += 1
                run_steps += 1
                if i % cfg["log_interval"] == 0 or i == spe:
                    now = time.perf_counter()
                    n = cfg["log_interval"] if i % cfg["log_interval"] == 0 else i % cfg["log_interval"]
                    eta = (now - run_start) / run_steps * (total - gstep)
                    log(f"epoch {epoch + 1}/{epochs} step {i}/{spe} loss {float(loss.asnumpy()):.4f} "
                        f"lr {lr_at(gstep):.6f} images/s {n * images_per_step / (now - tick):.1f} "
                        f"eta {_fmt_time(eta)}")
                    tick = now
        except RuntimeError as err:
            raise data.pipeline_error(err) or err from None
        mean_loss = float(loss_sum.asnumpy()) / max(i, 1)
        summary = dict(epoch=epoch + 1, step=gstep, loss=mean_loss, lr=lr_at(gstep),
                       seconds=time.perf_counter() - epoch_start)
        line = f"epoch {epoch + 1}/{epochs} done: mean loss {mean_loss:.4f}, {summary['seconds']:.1f} s"
        last = epoch + 1 == epochs
        if val_loader is not None and ((epoch + 1) % cfg["val_interval"] == 0 or last):
            metrics = evaluate(net, val_loader, world)
            net.set_train(True)
            summary.update(val_top1=metrics["top1"], val_top5=metrics["top5"], val_loss=metrics["loss"])
            line += (f"; val top1 {metrics['top1']:.4f} top5 {metrics['top5']:.4f} loss {metrics['loss']:.4f} "
                     f"({metrics['samples']} samples)")
        log(line)
        if rank != 0:
            continue
        with open(os.path.join(folder, "summary.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(summary) + "\n")
        improved = "val_top1" in summary and (best is None or summary["val_top1"] > best)
        if improved:
            best = summary["val_top1"]
        meta = dict(identity_of(cfg), epoch=epoch + 1, step=gstep, lr=lr_at(gstep), best_top1=best,
                    config=cfg)
        if (epoch + 1) % cfg["ckpt_save_interval"] == 0 or last:
            last_path = ckpts.save(step_cell, meta)
        if improved:
            best_path = ckpts.save(step_cell, meta, best=True)
    final_lr = lr_at(gstep)
    log(f"finished: {gstep} steps ({epochs} epochs x {spe}), final lr {final_lr:.8f}; "
        f"weights sha256 {weights_digest(net)}")
    if rank == 0:
        last_path = last_path or (ckpts.epoch_files() or [None])[-1]
        log(f"last checkpoint: {last_path}")
        log(f"best checkpoint: {best_path or '(none: no validation)'}")
    return dict(steps=gstep, lr=final_lr, last=last_path, best=best_path)


# ---------------------------------------------------------------- validation

def recorded_options(meta):
    """The options a checkpoint recorded (its training config and identity), as defaults for validate.py."""
    from .config import OPTIONS

    recorded = dict(meta.get("config") or {})
    recorded.update({k: meta[k] for k in IDENTITY if k in meta})
    skip = ("ckpt_path", "resume", "distribute", "device_target")
    return {k: v for k, v in recorded.items() if k in OPTIONS and k not in skip}


def validate(cfg, arrays, deploy=False, folded_bn=False, log=print):
    """Evaluate the checkpoint ``arrays`` (name -> numpy) on the ``val`` split; returns the metrics dict.

    ``deploy``: fold the ACBs in memory first.  ``folded_bn``: the checkpoint is
    of the fully folded model (``convert.py --fold_bn``), which has one form:
    ``create_model(..., deploy=True)``, whatever ``block_type`` says.
    """
    net, loader, world = eval_setup(cfg, arrays, deploy, folded_bn, log)
    return evaluate(net, loader, world)


def eval_setup(cfg, arrays, deploy=False, folded_bn=False, log=print):
    """What :func:`validate` evaluates: ``(net, loader, world)``, the loaded network in eval mode.

    The analyses (``acnet_ms.analysis``) evaluate through this and
    :func:`evaluate`, so their numbers are validate.py's.
    """
    import mindspore as ms

    from .checkpoint import net_state
    from .layers import switch_to_deploy
    from .models import create_model

    path = cfg["ckpt_path"]
    spec = data.inspect(cfg, "val")
    data.check_num_classes(spec, cfg["num_classes"], "validation")
    rank, world = setup(cfg, log=log)
    try:
        if folded_bn:
            net = create_model(cfg["model"], num_classes=cfg["num_classes"], deploy=True)
        else:
            net = create_model(cfg["model"], num_classes=cfg["num_classes"], block_type=cfg["block_type"],
                               gamma_init=cfg["gamma_init"])
        state = net_state(arrays, net)
    except ValueError as err:
        raise UserError(f"{path}: {err}") from None
    problem = mismatch(state, shapes_of(net), allow_extra=True)
    if problem:
        form = "deploy" if folded_bn else cfg["block_type"]
        raise UserError(f"{path}: not a checkpoint of {cfg['model']} ({form}): {problem}")
    for param in net.get_parameters():
        param.set_data(ms.Tensor(state[param.name].astype(ms.dtype_to_nptype(param.dtype))))
    net.set_train(False)
    if deploy:
        switch_to_deploy(net)
    loader = data.create_loader(cfg, spec, False, rank, world)
    return net, loader, world
