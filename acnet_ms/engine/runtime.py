"""What training and evaluation share: MindSpore's context, the model the options name, mixed precision."""
from dataclasses import dataclass

from ..cli import UserError, first_line
from .msrun import DeathRecorder, InitWatchdog, check_port_free, msrun_env, recorded_deaths


@dataclass(frozen=True)
class Context:
    """Where a process runs: its rank among ``world`` processes and the device target in use."""
    rank: int
    world: int
    device_target: str


#: the environment variable that sets the threads of MindSpore's CPU kernels (its default is 25, whatever the
#: machine: on a small or shared CPU, 1 or the core count wastes less time switching)
CPU_THREADS = "ACNET_MS_CPU_THREADS"


def set_cpu_threads():
    """Give MindSpore's CPU kernels the thread count ``$ACNET_MS_CPU_THREADS`` names (unset: MindSpore's own).

    MindSpore takes the count once a process; a later call keeps the first.
    """
    import os

    import mindspore as ms

    value = os.environ.get(CPU_THREADS, "").strip()
    if not value:
        return
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"{CPU_THREADS}={value!r}: a positive number of threads, or unset for MindSpore's default")
    try:
        ms.device_context.cpu.op_tuning.threads_num(int(value))
    except RuntimeError:  # set already in this process
        pass


def setup(cfg, log=print):
    """Configure MindSpore from ``cfg``; initialise collectives when distributed. Returns a :class:`Context`.

    ``cfg`` is not changed: an unset ``device_target`` is MindSpore's default
    one, which the returned context names.
    """
    import time

    import mindspore as ms
    import mindspore.dataset as ds

    set_cpu_threads()
    graph = cfg["mode"] == 0
    ms.set_context(mode=ms.GRAPH_MODE if graph else ms.PYNATIVE_MODE)
    target = cfg["device_target"] or ms.get_context("device_target")
    try:
        ms.set_device(target)
    except (RuntimeError, ValueError) as err:
        # a second setup in one process (several evaluations) finds the device already running: fine if it is ours
        if ms.get_context("device_target") != target:
            raise UserError(f"device_target {target} is not usable here ({first_line(err)})") from None
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

        msrun, started = msrun_env(), time.time()
        if msrun and msrun.role == "MS_SCHED":
            check_port_free(msrun)
        try:
            with InitWatchdog(msrun):
                init()
        except RuntimeError as err:
            died = recorded_deaths(cfg.get("ckpt_save_dir") or "", started) if msrun else []
            if died:  # a worker died mid-run: its recorder's line, not MindSpore's guess at which one
                raise UserError(died[0]) from None
            if msrun:
                raise UserError(f"{msrun.who}: msrun's cluster at {msrun.host}:{msrun.port} failed "
                                f"({first_line(err)}); every process of the job ends, see msrun's --log_dir for "
                                f"each rank's line") from None
            raise UserError("option 'distribute' is True but no launcher started this process: pass "
                            "--distribute False for one device, or launch with msrun (msrun --worker_num N "
                            "--local_worker_num N python train.py ...)") from None
        rank, world = get_rank(), get_group_size()
        DeathRecorder(msrun, cfg.get("ckpt_save_dir")).start(rank)
        ms.reset_auto_parallel_context()
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                     device_num=world)
    ms.set_seed(cfg["seed"])  # the same on every rank: identical initial weights
    ds.config.set_seed(cfg["seed"])
    return Context(rank, world, target)


#: the model options passed to ``create_model`` only when they differ from these defaults
OPTIONAL_MODEL_ARGS = (("drop_rate", None), ("drop_path_rate", None), ("in_channels", 3), ("maxpool_pad", None))


def model_kwargs(cfg):
    """Keyword arguments for ``create_model`` beyond name and classes.

    ``drop_rate``, ``drop_path_rate``, ``in_channels`` and ``maxpool_pad`` are
    passed only when they differ from the defaults, so models that do not take
    them build as long as the recipe leaves them alone.
    """
    base = cfg["block_type"] == "base"  # a caller may turn a block config into its plain model
    kwargs = dict(block_type=cfg["block_type"], block_options=None if base else cfg.get("block_options"))
    for key, default in OPTIONAL_MODEL_ARGS:
        if cfg.get(key, default) != default:
            kwargs[key] = cfg[key]
    return kwargs


def recorded_model_kwargs(meta):
    """The model options a training checkpoint records that change its function but no parameter
    (``maxpool_pad``): what a model built from the checkpoint alone (convert.py's folded model, a graph) needs
    to compute what was trained."""
    pad = ((meta or {}).get("config") or {}).get("maxpool_pad")
    return {"maxpool_pad": pad} if pad else {}


def build_model(cfg, num_classes=None, deploy=False, initialised=True):
    """The model ``cfg`` names, with one-line errors for options the model does not take; ``deploy``: its
    fully folded form (``create_model(..., deploy=True)``) with the same model options; not ``initialised``:
    its parameters left uninitialised, for a caller that sets every one of them from a checkpoint."""
    from ..models import create_model
    from ..models.factory import build_uninitialised

    kwargs = model_kwargs(dict(cfg, block_type="base") if deploy else cfg)

    def build():
        return create_model(cfg["model"], num_classes=num_classes or cfg["num_classes"], deploy=deploy, **kwargs)

    try:
        return build() if initialised else build_uninitialised(build)
    except TypeError as err:
        given = [k for k, _ in OPTIONAL_MODEL_ARGS if k in kwargs]
        raise UserError(f"model {cfg['model']} does not take option(s) {', '.join(given) or 'given'} "
                        f"({first_line(err)})") from None
    except ValueError as err:
        raise UserError(f"model {cfg['model']}: {first_line(err)}") from None
    except (RuntimeError, AttributeError, IndexError, KeyError, AssertionError, ZeroDivisionError) as err:
        import mindcv
        import mindspore as ms

        raise UserError(f"model {cfg['model']} does not build in MindSpore {ms.__version__} with MindCV "
                        f"{mindcv.__version__} ({first_line(err)}); docs/sweep.md lists the MindCV models that do "
                        f"not run as shipped here") from None


#: words of MindSpore's shape-inference errors: the input may be too small for the model
_SHAPE_WORDS = ("must be positive", "H_out", "W_out", "shape", "kernel size", "out of range", "less than")


def model_input_size(name):
    """The input size a model is made for: MindCV's ``default_cfg`` ``input_size``, else the registry's."""
    try:
        from mindcv.models.registry import get_pretrained_cfg_value

        size = get_pretrained_cfg_value(name, "input_size")
        if size:
            return int(size[-1])
    except Exception:  # noqa: BLE001  (a model MindCV does not know, or no such record)
        pass
    from ..models import model_entry

    return model_entry(name).input_size


#: input sizes tried, in order, for one that runs (ImageNet models' usual ones)
COMMON_SIZES = (224, 256, 299, 320, 384, 448, 512)


def smallest_input(cfg, size):
    """The smallest square input on which a fresh build of ``cfg``'s model runs a training forward pass,
    when it does not run on ``size`` x ``size``; None when it does (the failure was something else) or when
    none of the usual sizes runs either.

    Found by running the model (PyNative, batch 2, training mode, auxiliary heads
    included): the model's input size (:func:`model_input_size`) and :data:`COMMON_SIZES`
    above ``size`` in turn until one runs, then bisection between it and the largest
    that failed (about ten forward passes).  Models whose heads take one size only (a flattening
    classifier) run on an interval of sizes: the smallest of that interval is found.
    """
    import mindspore as ms
    import numpy as np

    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        net = build_model(cfg)
        net.set_train(True)

        def runs(side):
            try:
                net(ms.Tensor(np.zeros((2, cfg["in_channels"], side, side), np.float32)))
                return True
            except (RuntimeError, ValueError, TypeError, IndexError):
                return False

        if runs(size):
            return None
        # the first of the usual sizes above ``size`` that runs bounds the search
        lo, hi = size, None
        for side in sorted({model_input_size(cfg["model"]), *COMMON_SIZES}):
            if side > size:
                if runs(side):
                    hi = side
                    break
                lo = side
        if hi is None:
            return None
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if runs(mid) else (mid, hi)
        return hi
    except UserError:
        return None
    finally:
        ms.set_context(mode=mode)


def too_small(cfg, err):
    """The smallest input size the model runs on when ``err`` reads as a shape error of an input too small
    for it (see :func:`smallest_input`), else None."""
    if not any(word in str(err) for word in _SHAPE_WORDS):
        return None
    return smallest_input(cfg, cfg["image_resize"])


def amp_cast_classes(text):
    """``amp_cast_list`` ("[nn.Conv2d, nn.Dense]") checked against ``mindspore.nn``; UserError otherwise."""
    from mindspore import nn

    names = [n.strip() for n in text.strip().strip("[]()").split(",") if n.strip()]
    bad = [n for n in names if not (n.startswith("nn.") and isinstance(getattr(nn, n[3:], None), type))]
    if not names or bad:
        raise UserError(f"option 'amp_cast_list': expected a list of mindspore.nn cells such as [nn.Conv2d], "
                        f"got {text!r}")
    return "[" + ", ".join(names) + "]"


def apply_amp(net, level, cast_list=None):
    """Cast ``net`` for mixed precision with mindcv's rules (``amp_cast_list`` overrides its cell lists)."""
    from mindcv.utils.amp import auto_mixed_precision

    auto_mixed_precision(net, level, amp_cast_classes(cast_list) if cast_list else None)
    return net


def fmt_time(seconds):
    """``h:mm:ss`` of a duration (negative ones as 0)."""
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
