"""Training and evaluation: context, train step, loop, checkpoints, resume, progress."""
import glob
import hashlib
import json
import os
import re
import time

import numpy as np

from . import data
from .checkpoint import TMP_FILE, load_pretrained, mismatch, read_checkpoint, shapes_of, write_checkpoint
from .cli import Interrupted, UserError, first_line
from .config import IDENTITY, dump
from .evaluation import classifier_classes, eval_setup, evaluate, recorded_options, validate  # noqa: F401
from .runtime import amp_cast_classes, apply_amp, build_model, fmt_time, model_kwargs  # noqa: F401
from .runtime import setup
from .training.checkpoints import Checkpoints, check_resume, identity_of, restore  # noqa: F401
from .training.factories import build_train_step, loss_scaling, lr_schedule  # noqa: F401


# ---------------------------------------------------------------- context

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

def weights_digest(net):
    """sha256 of the trainable parameters: equal on every rank of a data-parallel run."""
    h = hashlib.sha256()
    for param in net.trainable_params():
        h.update(param.asnumpy().tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- bookkeeping shared by loop and sink

class Plan:
    """Where a run is and what each epoch's end does; the step loop and the sink path share it.

    Epochs are numbered from 1.  A sink launch runs one epoch's steps
    (``sink_size = steps_per_epoch``), so launches, epoch boundaries, the
    schedule position and the checkpoint/validation cadence are the same
    whichever path runs the steps.
    """

    def __init__(self, steps_per_epoch, epochs, lrs, start_epoch=0, start_step=0, val_interval=1,
                 save_interval=1, validating=False):
        self.steps_per_epoch, self.epochs, self.lrs = steps_per_epoch, epochs, lrs
        self.start_epoch, self.start_step = start_epoch, start_step
        self.val_interval, self.save_interval, self.validating = val_interval, save_interval, validating

    @property
    def sink_size(self):
        return self.steps_per_epoch

    def epochs_to_run(self):
        return range(self.start_epoch + 1, self.epochs + 1)

    def launches(self):
        """(epoch, steps) of each sink launch still to run."""
        return [(epoch, self.sink_size) for epoch in self.epochs_to_run()]

    def step_after(self, epoch):
        """The global step count at the end of ``epoch`` (continuing from the resumed step)."""
        return self.start_step + (epoch - self.start_epoch) * self.steps_per_epoch

    def lr_at(self, step):
        """The learning rate the ``step``-th step used (1-based; nan before the first)."""
        return self.lrs[min(step, len(self.lrs)) - 1] if step else float("nan")

    def last(self, epoch):
        return epoch == self.epochs

    def validates(self, epoch):
        return self.validating and (epoch % self.val_interval == 0 or self.last(epoch))

    def saves(self, epoch):
        return epoch % self.save_interval == 0 or self.last(epoch)

    def resume_point(self):
        """(epoch, step) a checkpoint written at the end of the last finished epoch records."""
        return self.start_epoch, self.start_step


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


class EpochEnd:
    """What happens after each epoch (MindCV's ``StateMonitor`` role): BN sync, validation, summary, checkpoints.

    With EMA the averaged weights are what is validated and saved (as MindCV
    does): they are swapped into the model for both, and the file keeps the
    online weights under ``ema.*`` for ``--resume``.
    """

    def __init__(self, cfg, plan, step_cell, net, val_loader, ckpts, rank, world, log, best=None, eval_net=None):
        self.cfg, self.plan, self.step_cell, self.net = cfg, plan, step_cell, net
        self.eval_net = eval_net or net
        self.val_loader, self.ckpts, self.rank, self.world, self.log = val_loader, ckpts, rank, world, log
        self.best = best
        from .transform import acb_layout

        self.layout = acb_layout(net) or None  # where each ACB's fold goes: convert.py needs nothing else
        self.last_path = None
        self.best_path = None
        best_file = os.path.join(ckpts.folder, f"{ckpts.prefix}-best.ckpt")
        if best is not None and os.path.isfile(best_file):
            self.best_path = best_file

    def __call__(self, epoch, step, mean_loss, seconds):
        plan, cfg = self.plan, self.cfg
        summary = dict(epoch=epoch, step=step, loss=mean_loss, lr=plan.lr_at(step), seconds=seconds)
        line = f"epoch {epoch}/{plan.epochs} done: mean loss {mean_loss:.4f}, {seconds:.1f} s"
        validate, save = plan.validates(epoch), plan.saves(epoch)
        if not (validate or save):
            self.log(line)
            self._summary(summary)
            return summary
        self.step_cell.swap_ema()
        try:
            sync_bn_statistics(self.net, cfg["dist_bn"], self.world)
            if validate:
                copy_weights(self.net, self.eval_net)
                metrics = evaluate(self.eval_net, self.val_loader, self.world)
                self.net.set_train(True)
                summary.update(val_top1=metrics["top1"], val_top5=metrics["top5"], val_loss=metrics["loss"])
                line += (f"; val top1 {metrics['top1']:.4f} top5 {metrics['top5']:.4f} loss {metrics['loss']:.4f} "
                         f"({metrics['samples']} samples)")
            self.log(line)
            self._summary(summary)
            if self.rank == 0:
                improved = "val_top1" in summary and (self.best is None or summary["val_top1"] > self.best)
                if improved:
                    self.best = summary["val_top1"]
                meta = dict(identity_of(cfg), acb_layout=self.layout, epoch=epoch, step=step, lr=plan.lr_at(step),
                            best_top1=self.best,
                            val_top1=summary.get("val_top1"), ema_in_model_slots=bool(cfg["ema"]), config=cfg,
                            **self.step_cell.scaler_state())
                if save:
                    self.last_path = self.ckpts.save(self.step_cell, meta)
                if improved:
                    self.best_path = self.ckpts.save(self.step_cell, meta, best=True)
        finally:
            self.step_cell.swap_ema()
        return summary

    def _summary(self, summary):
        if self.rank == 0:
            with open(os.path.join(self.ckpts.folder, "summary.jsonl"), "a", encoding="utf-8") as f:
                f.write(json.dumps(summary) + "\n")


# ---------------------------------------------------------------- training

def uses_sink(cfg, log):
    """Whether to sink the data: ``dataset_sink_mode`` on Ascend or GPU; on CPU one logged line and the loop."""
    if not cfg["dataset_sink_mode"]:
        return False
    if cfg["device_target"] == "CPU":
        log("dataset_sink_mode: MindSpore sinks data on Ascend and GPU only; running the step loop on CPU")
        return False
    return True


def check_inputs(cfg):
    """Every check that needs no device: options, files, data.  Nothing is written. Returns (train, val) specs."""
    from .models import model_entry

    try:
        model_entry(cfg["model"])
    except ValueError as err:
        raise UserError(str(err)) from None
    if cfg["pretrained"]:
        raise UserError("option 'pretrained': MindCV's pretrained weights are downloaded from the network, which "
                        "this port does not do; download the .ckpt and pass it as ckpt_path (plain weights load "
                        "into base and ACB models)")
    if cfg["resume_opt"] and not cfg["resume"]:
        if not cfg["ckpt_path"]:
            raise UserError("option 'resume_opt' resumes the checkpoint given as ckpt_path, which is not set")
        cfg["resume"], cfg["ckpt_path"] = cfg["ckpt_path"], None
    for key in ("ckpt_path", "resume"):
        if cfg[key] and not os.path.isfile(cfg[key]):
            raise UserError(f"{cfg[key]}: no such checkpoint file ({key})")
    if (cfg["mixup"] > 0 or cfg["cutmix"] > 0) and cfg["batch_size"] % 2:
        raise UserError(f"mixup/cutmix mix a batch with its reverse: batch_size must be even, got {cfg['batch_size']}")
    if cfg["amp_cast_list"]:
        amp_cast_classes(cfg["amp_cast_list"])
    if cfg["dataset_download"]:
        data.check_download(cfg)
    train_spec = data.inspect(cfg, "train")
    if cfg["num_classes"] is None:
        cfg["num_classes"] = train_spec.num_classes  # MindCV: None reads the class count from the data
    data.check_num_classes(train_spec, cfg["num_classes"], "train")
    val_spec = None
    if cfg["val_while_train"]:
        val_spec = data.inspect(cfg, "val")
        data.check_num_classes(val_spec, cfg["num_classes"], "validation")
    if cfg["resume"]:
        check_resume(cfg)
    check_run_folder(cfg)
    return train_spec, val_spec


#: what a run writes into its folder (besides its temporary files)
RUN_FILE = re.compile(r"(.+\.ckpt|summary\.jsonl|config\.yaml|train_rank\d+\.log)$")


def check_run_folder(cfg):
    """A run writes only into a folder of its own: UserError if ``ckpt_save_dir`` holds another run.

    Without ``--resume`` the folder must hold no run's files; with it, only
    the files of the run being resumed (the folder of the ``--resume`` checkpoint).
    Checked on every rank before any of them writes (collective initialisation
    waits for all of them).
    """
    folder = cfg["ckpt_save_dir"]
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"{folder}: ckpt_save_dir is a file")
    if not os.path.isdir(folder):
        return
    if cfg["resume"] and os.path.samefile(os.path.dirname(os.path.abspath(cfg["resume"])), folder):
        return
    earlier = sorted((not f.endswith(".ckpt"), f) for f in os.listdir(folder) if RUN_FILE.match(f))
    earlier = [f for _, f in earlier]  # checkpoints first
    if earlier:
        more = f" and {len(earlier) - 1} more" if len(earlier) > 1 else ""
        raise UserError(f"{folder}: ckpt_save_dir holds an earlier run ({earlier[0]}{more}), which this run would "
                        f"overwrite; choose another --ckpt_save_dir, or continue that run with --resume "
                        f"{os.path.join(folder, '<its last -eNNN.ckpt>')}")


def clear_run(folder):
    """Remove a run's files from ``folder`` (for drivers that own it, such as make demo); other files stay."""
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if RUN_FILE.match(name) and os.path.isfile(os.path.join(folder, name)):
                os.remove(os.path.join(folder, name))


def remove_stale_temporaries(folder, log):
    """Remove the temporary checkpoint files a killed process left behind (those of no running process)."""
    for name in sorted(os.listdir(folder)):
        match = TMP_FILE.match(name)
        if not match:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
            if pid != os.getpid():
                continue  # a live process is writing it
        except (ProcessLookupError, PermissionError):
            pass
        os.remove(os.path.join(folder, name))
        log(f"removed {name}, a partial checkpoint of an earlier, interrupted process")


def keep_summary_until(folder, epoch):
    """Drop ``summary.jsonl``'s lines after ``epoch`` (a resumed run writes them again), atomically."""
    path = os.path.join(folder, "summary.jsonl")
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            if json.loads(line).get("epoch", 0) <= epoch:
                kept.append(line)
        except ValueError:
            continue  # a line cut short by a kill
    if kept != lines:
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(kept)
        os.replace(tmp, path)


class Stopped(Exception):
    """The run stopped on SIGINT or SIGTERM; ``code`` is the exit status (128 + signal number)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum, self.code = signum, 128 + signum


class StopSignals:
    """SIGINT / SIGTERM during training: the step in flight (and a save) completes, then :class:`Stopped`.

    A second signal stops at once.  Outside the main thread nothing is
    installed (signals are the main thread's).  MindSpore's runtime puts its
    own SIGINT handler in place when it first compiles a graph (it turns
    SIGINT into SIGTERM), so the loop calls :meth:`install` again after that.
    """

    def __init__(self):
        self.signum = None
        self.previous = {}

    def __enter__(self):
        self.install()
        return self

    def install(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous = signal.signal(sig, self._handle)
                self.previous.setdefault(sig, previous)

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise Stopped(signum)
        self.signum = signum

    def __exit__(self, *exc):
        import signal

        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False

    def check(self):
        if self.signum is not None:
            raise Stopped(self.signum)


def epoch_seed(seed, epoch):
    """The data pipeline's seed for ``epoch``: its order and random augmentations depend on the run's
    seed and the epoch only, so a resumed run sees the same batches as an uninterrupted one."""
    return (int(seed) * 100003 + int(epoch)) % (2 ** 32)


def train(cfg):
    """Run the training that ``cfg`` describes. Returns a summary dict.

    Every input is checked and the whole run is built (data, model, train
    step, resumed state) before anything is written to ``ckpt_save_dir``.
    """
    train_spec, val_spec = check_inputs(cfg)
    folder = cfg["ckpt_save_dir"]
    early, run = [], dict(last_path=cfg["resume"])
    with StopSignals() as stop:
        try:
            context = setup(cfg, log=early.append)
            cfg["device_target"] = context.device_target
            rank, world = context.rank, context.world
            run.update(_build(cfg, rank, world, train_spec, val_spec, early.append), stop=stop)
            stop.check()
        except Stopped as stopped:
            raise Interrupted(stopped_line(stopped, run, None), code=stopped.code) from None
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as err:
            raise UserError(f"{folder}: cannot create ckpt_save_dir ({err.strerror})") from None
        log = RunLog(folder, rank, echo=rank == 0)
        for line in early:
            log(line)
        try:
            if rank == 0:
                remove_stale_temporaries(folder, log)
                if cfg["resume"]:
                    keep_summary_until(folder, run["plan"].start_epoch)
                dump(cfg, os.path.join(folder, "config.yaml"))
            return _train(cfg, rank, world, run, log)
        except Stopped as stopped:
            raise Interrupted(stopped_line(stopped, run, log), code=stopped.code) from None
        finally:
            log.close()


def stopped_line(stopped, run, log):
    """Log where a stopped run stands and return the one line to print: where to resume."""
    import signal

    name = signal.Signals(stopped.signum).name
    at = run.get("position") or "before its first step"
    last = run.get("last_path")
    where = (f"continue with --resume {last}" if last else
             "no checkpoint was written yet: start it again")
    line = f"stopped by {name} at {at}; {where}"
    if log is not None:
        log.echo = False  # the entry point prints it
        log(line)
    return line


def _build(cfg, rank, world, train_spec, val_spec, log):
    """Loaders, model, train step and resumed state; no file is written."""
    log(f"{cfg['model']} ({cfg['block_type']}), {cfg['num_classes']} classes; {train_spec.num_samples} training "
        f"samples from {train_spec.root}; {world} device(s) on {cfg['device_target']}, "
        f"{'graph' if cfg['mode'] == 0 else 'PyNative'} mode")
    workers = data.workers(cfg, log)
    train_loader = data.create_loader(cfg, train_spec, True, rank, world, workers)
    spe = train_loader.get_dataset_size()
    if spe == 0:
        raise UserError(f"{train_spec.root}: {train_spec.num_samples} samples make no full batch of "
                        f"{cfg['batch_size']} per device")
    val_loader = data.create_loader(cfg, val_spec, False, rank, world, workers) if val_spec else None
    net = build_model(cfg)
    if cfg["block_type"] == "acb":
        from .transform import summary_line

        log(f"{cfg['model']}: {summary_line(net)}")
    eval_net = None
    if val_loader is not None and cfg["val_amp_level"] != cfg["amp_level"]:
        # validation runs at val_amp_level: a second network of the same names, given the weights before each use
        eval_net = apply_amp(build_model(cfg), cfg["val_amp_level"], cfg["amp_cast_list"])
    if cfg["ckpt_path"]:
        load_pretrained(net, cfg["ckpt_path"], log)
    lrs = lr_schedule(cfg, spe, log)
    step_cell, _ = build_train_step(net, cfg, lrs)
    start_epoch, gstep, best = 0, 0, None
    if cfg["resume"]:
        start_epoch, gstep, meta = restore(step_cell, cfg, spe, log)
        best = meta.get("best_top1")
    plan = Plan(spe, cfg["epoch_size"], lrs, start_epoch, gstep, cfg["val_interval"], cfg["ckpt_save_interval"],
                val_loader is not None)
    return dict(train_loader=train_loader, val_loader=val_loader, net=net, eval_net=eval_net, step_cell=step_cell,
                plan=plan, best=best, sink=uses_sink(cfg, log))


def _train(cfg, rank, world, run, log):
    plan, net, step_cell = run["plan"], run["net"], run["step_cell"]
    folder = cfg["ckpt_save_dir"]
    ckpts = Checkpoints(folder, f"{cfg['model']}_{cfg['block_type']}", cfg["keep_checkpoint_max"],
                        cfg["ckpt_save_policy"])
    end = EpochEnd(cfg, plan, step_cell, net, run["val_loader"], ckpts, rank, world, log, best=run["best"],
                   eval_net=run["eval_net"])
    if plan.start_epoch >= plan.epochs:
        log(f"nothing to do: the checkpoint already has {plan.start_epoch} of {plan.epochs} epochs")
    images_per_step = cfg["batch_size"] * world
    gstep = plan.start_step
    if run["sink"]:
        gstep = _run_sunk(cfg, plan, step_cell, run["train_loader"], end, images_per_step, log, run)
    else:
        gstep = _run_loop(cfg, plan, step_cell, run["train_loader"], end, images_per_step, log, run)
    final_lr = plan.lr_at(gstep)
    log(f"finished: {gstep} steps ({plan.epochs} epochs x {plan.steps_per_epoch}), final lr {final_lr:.8f}; "
        f"weights sha256 {weights_digest(net)}")
    if rank == 0:
        last_path = end.last_path or (ckpts.epoch_files() or [None])[-1]
        log(f"last checkpoint: {last_path}")
        log(f"best checkpoint: {end.best_path or '(none: no validation)'}")
        return dict(steps=gstep, lr=final_lr, last=last_path, best=end.best_path)
    return dict(steps=gstep, lr=final_lr, last=None, best=None)


def _run_loop(cfg, plan, step_cell, loader, end, images_per_step, log, run):
    """The ordinary loop: one call of the compiled step per batch, progress every ``log_interval`` steps.

    Each epoch reads the data through a pipeline seeded for that epoch
    (:func:`epoch_seed`).  A stop signal ends the loop after the step in
    flight (:class:`StopSignals`); ``run["position"]`` and ``run["last_path"]``
    say where it stood.
    """
    import mindspore.dataset as ds

    spe, gstep = plan.steps_per_epoch, plan.start_step
    stop = run["stop"]
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
                run["position"] = f"epoch {epoch}/{plan.epochs} step {i}/{spe}"
                if first:
                    stop.install()
                stop.check()
                loss_sum = loss if loss_sum is None else loss_sum + loss
                gstep += 1
                run_steps += 1
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
        run["last_path"] = end.last_path or run.get("last_path")
        run["position"] = f"the end of epoch {epoch}/{plan.epochs}"
        stop.install()  # validation may have compiled a graph
        stop.check()
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
        raise UserError(f"the train step of {cfg['model']} (block_type {cfg['block_type']}, amp_level "
                        f"{cfg['amp_level']}, opt {cfg['opt']}) does not compile or run on {cfg['device_target']}: "
                        f"{first_line(err)}{graph_report()}") from None


def graph_report():
    """Where MindSpore wrote its report of a failed compilation (``analyze_fail.ir``), as a suffix."""
    folder = os.environ.get("MS_DEV_SAVE_GRAPHS_PATH")
    if not folder:
        return ""
    found = glob.glob(os.path.join(folder, "rank_*", "om", "analyze_fail.ir"))
    return f" (MindSpore's report: {max(found, key=os.path.getmtime)})" if found else ""


def _run_sunk(cfg, plan, step_cell, loader, end, images_per_step, log, run):
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
        run["last_path"] = end.last_path or run.get("last_path")
        run["position"] = f"the end of epoch {epoch}/{plan.epochs}"
        run["stop"].install()
        run["stop"].check()
    return gstep
