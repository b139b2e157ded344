"""A run from start to end: inputs resolved, the run built, then the step loop (or the sink path)."""
import glob
import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any

from .. import kinds, stack
from ..engine import data
from ..engine.loading import load_pretrained
from ..cli import Interrupted, UserError, first_line
from ..config.loader import dump
from ..engine.msrun import remove_death_records
from ..engine.runtime import apply_amp, build_model, fmt_time, setup, too_small
from ..models.factory import recorded_block
from ..reparam.transform import summary_line
from .callbacks import EpochEnd, Saving, Summary, SyncBatchNorm, Validation
from .checkpoints import Checkpoints, restore
from .factories import build_train_step, lr_schedule
from .failures import step_failure
from .run import Plan, RunConfig, RunState
from .setup import (RunLog, StopSignals, Stopped, check_inputs, forget_failed_run, keep_summary_until,
                    remove_stale_temporaries, stopped_line)


@dataclass
class RunParts:
    """What a run is built from before its first step: loaders, networks, the train step and its plan."""
    train_loader: Any
    val_loader: Any
    net: Any
    eval_net: Any
    step_cell: Any
    plan: Plan
    sink: bool
    class_names: Any = None


def weights_digest(net):
    """sha256 of the trainable parameters: equal on every rank of a data-parallel run."""
    h = hashlib.sha256()
    for param in net.trainable_params():
        h.update(param.asnumpy().tobytes())
    return h.hexdigest()[:16]


def epoch_seed(seed, epoch):
    """The data pipeline's seed for ``epoch``: its order and random augmentations depend on the run's
    seed and the epoch only, so a resumed run sees the same batches as an uninterrupted one."""
    return (int(seed) * 100003 + int(epoch)) % (2 ** 32)


def uses_sink(cfg, log):
    """Whether to sink the data: ``dataset_sink_mode`` on Ascend or GPU; on CPU one logged line and the loop."""
    if not cfg["dataset_sink_mode"]:
        return False
    if cfg["device_target"] == "CPU":
        log("dataset_sink_mode: MindSpore sinks data on Ascend and GPU only; running the step loop on CPU")
        return False
    return True


def train(options):
    """Run the training that ``options`` describe. Returns a summary dict.

    Every input is checked and the whole run is built (data, model, train
    step, resumed state) before anything is written to ``ckpt_save_dir``.
    The options are resolved once (:func:`check_inputs`, the device in use)
    into a read-only :class:`RunConfig`; ``options`` itself is not changed.
    """
    resolved, train_spec, val_spec = check_inputs(options)
    folder = resolved["ckpt_save_dir"]
    early, state = [], RunState(resumed_from=resolved["resume"])
    started = time.time()  # before the cluster forms: a worker's record of a death in this launch is newer
    with StopSignals() as stop:
        try:
            context = setup(resolved, log=early.append)
            cfg = RunConfig(dict(resolved, device_target=context.device_target))
            parts = _build(cfg, context.rank, context.world, train_spec, val_spec, state, early.append)
            stop.check()
        except Stopped as stopped:
            raise Interrupted(stopped_line(stopped, state, None), code=stopped.code) from None
        created = not os.path.isdir(folder)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as err:
            raise UserError(f"{folder}: cannot create ckpt_save_dir ({err.strerror})") from None
        log = RunLog(folder, context.rank, echo=context.rank == 0)
        for line in early:
            log(line)
        failed = True
        try:
            if context.rank == 0:
                remove_stale_temporaries(folder, log)
                remove_death_records(folder, before=started)
                if cfg["resume"]:
                    keep_summary_until(folder, parts.plan.start_epoch)
                dump(cfg, os.path.join(folder, "config.yaml"))
            summary = _train(cfg, context.rank, context.world, parts, state, stop, log)
            failed = False
            return summary
        except Stopped as stopped:
            failed = False  # its line says what to do with the folder
            raise Interrupted(stopped_line(stopped, state, log, folder), code=stopped.code) from None
        finally:
            log.close()
            if failed and not cfg["resume"]:
                # failed before its first checkpoint (a graph that does not compile, an unreadable image, ...):
                # nothing of it may block the same command again
                forget_failed_run(folder, context.rank, created)


def _block_words(cfg):
    """``"rep"``, or ``"rep: quant_aware true"``: the block type and the options the run sets otherwise than
    its kind's defaults."""
    block_type, options = recorded_block(cfg)
    if block_type == kinds.BASE:
        return kinds.BASE
    spec = kinds.get_kind(block_type).options
    changed = [f"{k} {str(v).lower() if isinstance(v, bool) else v}" for k, v in options.items()
               if v != spec[k].default]
    return block_type + (": " + ", ".join(changed) if changed else "")


def _build(cfg, rank, world, train_spec, val_spec, state, log):
    """Loaders, model, train step, and ``state`` where the resumed run stood; no file is written."""
    log(f"{cfg['model']} ({_block_words(cfg)}), {cfg['num_classes']} classes; {train_spec.num_samples} training "
        f"samples from {train_spec.root}; {world} device(s) on {cfg['device_target']}, "
        f"{'graph' if cfg['mode'] == 0 else 'PyNative'} mode")
    log(stack.describe(stack.versions(cfg["device_target"])))
    workers = data.workers(cfg, log)
    train_loader = data.create_loader(cfg, train_spec, True, rank, world, workers)
    spe = train_loader.get_dataset_size()
    if spe == 0 and cfg["aug_repeats"] > 1:
        # MindCV's RepeatAugSampler takes whole rounds of 256 samples, split over the devices
        taken = train_spec.num_samples // 256 * 256 // world
        raise UserError(f"{train_spec.root}: option 'aug_repeats' {cfg['aug_repeats']}: MindCV's repeated-"
                        f"augmentation sampler takes whole rounds of 256 of the {train_spec.num_samples} samples, "
                        f"{taken} per device, which make no full batch of {cfg['batch_size']}; set aug_repeats 1 "
                        f"or train on at least {256 * world} samples")
    if spe == 0:
        raise UserError(f"{train_spec.root}: {train_spec.num_samples} samples make no full batch of "
                        f"{cfg['batch_size']} per device")
    val_loader = data.create_loader(cfg, val_spec, False, rank, world, workers) if val_spec else None
    net = build_model(cfg)
    if cfg["block_type"] != "base":
        log(f"{cfg['model']}: {summary_line(net)}")
    eval_net = None
    if val_loader is not None and cfg["val_amp_level"] != cfg["amp_level"]:
        # validation runs at val_amp_level: a second network of the same names, given the weights before each use
        eval_net = apply_amp(build_model(cfg), cfg["val_amp_level"], cfg["amp_cast_list"])
    scales = None
    if cfg["repopt_scales"]:
        from .repopt import start_run

        scales = start_run(cfg, net, log)
    if cfg["ckpt_path"]:
        load_pretrained(net, cfg["ckpt_path"], log, partial=cfg["ckpt_partial"])
    lrs = lr_schedule(cfg, spe, log)
    step_cell, _ = build_train_step(net, cfg, lrs, repopt=scales)
    start_epoch, gstep = 0, 0
    if cfg["resume"]:
        start_epoch, gstep, meta = restore(step_cell, cfg, spe, log)
        state.best_top1 = meta.get("best_top1")
    state.epoch, state.step = start_epoch, gstep
    plan = Plan(spe, cfg["epoch_size"], lrs, start_epoch, gstep, cfg["val_interval"], cfg["ckpt_save_interval"],
                val_loader is not None)
    return RunParts(train_loader, val_loader, net, eval_net, step_cell, plan, uses_sink(cfg, log),
                    train_spec.class_names)


def _train(cfg, rank, world, parts, state, stop, log):
    plan, net, step_cell = parts.plan, parts.net, parts.step_cell
    ckpts = Checkpoints(cfg["ckpt_save_dir"], f"{cfg['model']}_{cfg['block_type']}", cfg["keep_checkpoint_max"],
                        cfg["ckpt_save_policy"])
    if state.best_top1 is not None and os.path.isfile(ckpts.best_file):
        state.best_saved = ckpts.best_file
    end = EpochEnd(plan, step_cell, [SyncBatchNorm(net, cfg["dist_bn"], world),
                                     Validation(net, parts.eval_net, parts.val_loader, world),
                                     Summary(ckpts.folder, rank, log),
                                     Saving(cfg, step_cell, net, ckpts, state, rank, parts.class_names)])
    if plan.start_epoch >= plan.epochs:
        log(f"nothing to do: the checkpoint already has {plan.start_epoch} of {plan.epochs} epochs")
    images_per_step = cfg["batch_size"] * world
    run_steps = _run_sunk if parts.sink else _run_loop
    gstep = run_steps(cfg, plan, step_cell, parts.train_loader, end, images_per_step, log, state, stop)
    final_lr = plan.lr_at(gstep)
    log(f"finished: {gstep} steps ({plan.epochs} epochs x {plan.steps_per_epoch}), final lr {final_lr:.8f}; "
        f"weights sha256 {weights_digest(net)}")
    if rank == 0:
        last_path = state.last_saved or (ckpts.epoch_files() or [None])[-1]
        log(f"last checkpoint: {last_path}")
        log(f"best checkpoint: {state.best_saved or '(none: no validation)'}")
        return dict(steps=gstep, lr=final_lr, last=last_path, best=state.best_saved)
    return dict(steps=gstep, lr=final_lr, last=None, best=None)


def _epoch_done(state, epoch, step, plan, stop):
    """After the epoch's end: where the run stands; a stop signal received meanwhile stops it here."""
    state.epoch, state.step = epoch, step
    state.position = f"the end of epoch {epoch}/{plan.epochs}"
    stop.install()  # validation may have compiled a graph
    stop.check()


def _run_loop(cfg, plan, step_cell, loader, end, images_per_step, log, state, stop):
    """The ordinary loop: one call of the compiled step per batch, progress every ``log_interval`` steps.

    Each epoch reads the data through a pipeline seeded for that epoch
    (:func:`epoch_seed`).  A stop signal ends the loop after the step in
    flight (:class:`StopSignals`); ``state`` says where it stood.
    """
    import mindspore.dataset as ds

    spe, gstep = plan.steps_per_epoch, plan.start_step
    run_start, run_steps = time.perf_counter(), 0
    total = plan.step_after(plan.epochs)
    for epoch in plan.epochs_to_run():
        ds.config.set_seed(epoch_seed(cfg["seed"], epoch))
        iterator = loader.create_tuple_iterator(num_epochs=1)
        epoch_start = tick = time.perf_counter()
        loss_sum, i = None, 0
        try:
            for i, (image, label) in enumerate(iterator, 1):
                first = gstep == plan.start_step
                loss = train_call(step_cell, image, label, first, cfg)[0]
                state.position = f"epoch {epoch}/{plan.epochs} step {i}/{spe}"
                if first:
                    stop.install()
                stop.check()
                loss_sum = loss if loss_sum is None else loss_sum + loss
                gstep += 1
                run_steps += 1
                state.step = gstep
                if i % cfg["log_interval"] == 0 or i == spe:
                    now = time.perf_counter()
                    n = cfg["log_interval"] if i % cfg["log_interval"] == 0 else i % cfg["log_interval"]
                    eta = (now - run_start) / run_steps * (total - gstep)
                    log(f"epoch {epoch}/{plan.epochs} step {i}/{spe} loss {float(loss.asnumpy()):.4f} "
                        f"lr {plan.lr_at(gstep):.6f} images/s {n * images_per_step / (now - tick):.1f} "
                        f"eta {fmt_time(eta)}")
                    tick = now
        except RuntimeError as err:
            stop.check()  # a signal also reaches the pipeline's worker processes
            raise data.pipeline_error(err) or err from None
        end(epoch, gstep, float(loss_sum.asnumpy()) / max(i, 1), time.perf_counter() - epoch_start)
        _epoch_done(state, epoch, gstep, plan, stop)
    return gstep


def train_call(step_cell, image, label, first, cfg):
    """One call of the train step; the first call compiles it, and a failure there is one line."""
    if not first:
        return step_cell(image, label)
    try:
        return step_cell(image, label)
    except (TypeError, ValueError, RuntimeError) as err:
        if data.pipeline_error(err):
            raise
        smallest = too_small(cfg, err)
        if smallest:
            raise UserError(f"image_resize {cfg['image_resize']} is too small for {cfg['model']}: the smallest input "
                            f"it runs on is {smallest}x{smallest} (found by running the model at each size; "
                            f"{first_line(err)})") from None
        raise UserError(step_failure(cfg, err) + graph_report()) from None


def graph_report():
    """Where MindSpore wrote its report of a failed compilation (``analyze_fail.ir``), as a suffix."""
    folder = os.environ.get("MS_DEV_SAVE_GRAPHS_PATH")
    if not folder:
        return ""
    found = glob.glob(os.path.join(folder, "rank_*", "om", "analyze_fail.ir"))
    return f" (MindSpore's report: {max(found, key=os.path.getmtime)})" if found else ""


def _run_sunk(cfg, plan, step_cell, loader, end, images_per_step, log, state, stop):
    """Ascend/GPU: ``mindspore.data_sink`` over the same compiled step, one launch per epoch.

    Untested on hardware (MindSpore refuses sinking on CPU).  One progress line
    per launch; the mean loss of an epoch is its last step's loss.
    """
    import mindspore as ms
    import mindspore.dataset as ds

    # one pipeline for all launches: its order is seeded at the first epoch run (a resume is not
    # batch-exact on this path, unlike the step loop's per-epoch pipelines)
    ds.config.set_seed(epoch_seed(cfg["seed"], plan.start_epoch + 1))
    sunk = ms.data_sink(step_cell, loader, sink_size=plan.sink_size)
    run_start = time.perf_counter()
    gstep = plan.start_step
    for epoch, steps in plan.launches():
        tick = time.perf_counter()
        try:
            loss = float(sunk()[0].asnumpy())
        except RuntimeError as err:
            raise data.pipeline_error(err) or err from None
        gstep = plan.step_after(epoch)
        now = time.perf_counter()
        eta = (now - run_start) / (gstep - plan.start_step) * (plan.step_after(plan.epochs) - gstep)
        log(f"epoch {epoch}/{plan.epochs} step {steps}/{plan.steps_per_epoch} loss {loss:.4f} "
            f"lr {plan.lr_at(gstep):.6f} images/s {steps * images_per_step / (now - tick):.1f} eta {fmt_time(eta)}")
        end(epoch, gstep, loss, now - tick)
        _epoch_done(state, epoch, gstep, plan, stop)
    return gstep
