"""Before and around a run: its inputs checked and options resolved, its folder, its logs, its stop signals."""
import json
import os
import re
import time

from ..engine import data
from ..io.checkpoint import TMP_FILE
from ..cli import UserError
from ..engine.runtime import amp_cast_classes
from .checkpoints import check_resume


def check_inputs(options):
    """Every check that needs no device: options, files, data.  Nothing is written.

    Returns ``(resolved, train_spec, val_spec)``: ``resolved`` is a copy of
    ``options`` with what the inputs settle filled in (``resume_opt`` moves
    ``ckpt_path`` to ``resume``; an unset ``num_classes`` is the data's);
    ``options`` itself is left as it is.
    """
    from ..models import model_entry

    cfg = dict(options)
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
    if cfg["repopt_scales"]:
        from .repopt import check_run

        check_run(cfg)
    if cfg["resume"]:
        check_resume(cfg)
    check_run_folder(cfg)
    return cfg, train_spec, val_spec


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


# ---------------------------------------------------------------- the run folder

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
        epochs = sorted(f for f in earlier if EPOCH_FILE.search(f))
        then = (f"or continue that run with --resume {os.path.join(folder, epochs[-1])}" if epochs else
                "or remove those files (they hold no checkpoint to resume)")
        raise UserError(f"{folder}: ckpt_save_dir holds an earlier run ({earlier[0]}{more}), which this run would "
                        f"overwrite; choose another --ckpt_save_dir, {then}")


#: an epoch checkpoint (``<model>_<block_type>-eNNN.ckpt``), the files ``--resume`` continues from
EPOCH_FILE = re.compile(r"-e\d+\.ckpt$")


def forget_failed_run(folder, rank, created):
    """A run that failed before any checkpoint reached ``folder``: remove what it wrote there (its config,
    this rank's log, its summary), and the folder itself if the run created it and it is left empty, so
    that the same command can run again.  Returns whether anything was removed."""
    if not os.path.isdir(folder) or any(f.endswith(".ckpt") for f in os.listdir(folder)):
        return False
    mine = [f"train_rank{rank}.log"] + (["config.yaml", "summary.jsonl"] if rank == 0 else [])
    removed = False
    for name in mine:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            os.remove(path)
            removed = True
    if created:
        try:
            os.rmdir(folder)  # only if empty (another rank's log may still be there)
        except OSError:
            pass
    return removed


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


# ---------------------------------------------------------------- stop signals

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


def stopped_line(stopped, state, log, folder=None):
    """Log where a stopped run stands (a :class:`~acnet_ms.training.run.RunState`) and return the one line
    to print: where to resume (``folder``: the run folder, if the run had written its config and log
    there, which a new run may not reuse)."""
    import signal

    name = signal.Signals(stopped.signum).name
    at = state.position or "before its first step"
    last = state.resume_path
    where = (f"continue with --resume {last}" if last else
             f"no checkpoint was written yet: start it again with another --ckpt_save_dir, or remove {folder} "
             f"(it holds only this run's config and log)" if folder else
             "no checkpoint was written yet: start it again")
    line = f"stopped by {name} at {at}; {where}"
    if log is not None:
        log.echo = False  # the entry point prints it
        log(line)
    return line
