"""Recipe sweep: every MindCV model, with ACBs, through one training step, conversion and a strict load.

    python benchmarks/sweep.py [--models resnet18,'mobilenet_v3_*'] [--resume] [--timeout 600] [--mem_gb 10]
                               [--jsonl sweep_out/sweep.jsonl] [--out docs/sweep.md]

(acnet_ms installed: `make sweep` sets that up, or `pip install -e .`.)

For each model of ``mindcv.list_models()``, in a process of its own (a crash,
hang or memory blow-up of one model does not end the sweep; it is killed at
``--timeout`` seconds or when its resident memory passes ``--mem_gb``):

1. build the ACB form through ``acnet_ms.create_model(name, num_classes=10, block_type="acb")``
   (a model with no eligible k x k conv is recorded as "no ACB" with the reason);
2. find the smallest input size (64, 224 or 299 px) at which stock MindCV's model runs
   a forward pass in training mode;
3. one training step (batch of 2 random images, int32 labels) with the project's
   train step (``acnet_ms.training.factories.build_train_step``) at the AMP level and with
   the optimizer of the model's MindCV recipe, in PyNative mode on CPU;
4. save a training checkpoint (weights, optimizer slots, the metadata training records);
5. convert it (``acnet_ms.convert.pipeline.convert_checkpoint``);
6. strict-load the result into the stock ``mindcv.create_model(name, num_classes=10)``;
7. compare, in eval mode and float32, the logits of that stock model with those of a
   fresh ACB model holding the training checkpoint's weights (tolerance 1e-4 of max(1, the largest logit)).

One JSON line per model is appended to ``--jsonl`` as soon as the model is
done (``--resume`` skips models already there; without it the selected models
run again and their new lines replace the old ones), and ``--out`` is
rewritten from all the lines after each model.
"""
import argparse
import fnmatch
import gc
import json
import os
import resource
import signal
import subprocess
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NUM_CLASSES = 10
BATCH = 2
SIZES = (64, 224, 299)  # tried in order: the first the stock model trains at is used (vgg: 224, inception_v3: 299)
TOL = 1e-4  # logits: max |stock - acb| over max(1, largest |acb| logit), as tests/test_mindcv_families.py
LR = 0.01

#: what is known of a failure (glob pattern -> explanation), printed after its error line
WHY = {
    "hrnet_w*": "HRNet's ACB form (272 ACBs) needs more memory for one training step than the sweep's cap "
                "(9 GB with adamw in PyNative mode); the plain model fits. MindSpore's memory on CPU follows the "
                "number of graph nodes, and an ACB with branch BNs has three convs, three BNs and three times the "
                "optimizer updates of the conv + BN it replaces: compiling and running one step at 64 px "
                "takes 9.5 GB against 3.7 GB for the plain model (2.6x), the ACB without branch BNs 5.4 GB "
                "(1.46x; make bench, docs/performance.md)",
    "res2net152*": "the fold is exact on this model (1.2e-6 with randomised BN statistics, by hand), but its "
                   "eval-mode logits are huge (7e26 at initialisation with those statistics): each ACB starts as three branches at the "
                   "conv's own scale, 50 blocks multiply that, and one step moves the BN moving statistics only "
                   "10 % towards the batch's, so float32 rounding dominates; training mode normalises it away",
    "resnest101": "the plain model diverges the same way at O2 with the sweep's fixed loss scale of 1 (191 of "
                  "its parameters not finite after one step, measured); with loss_scale_type dynamic the "
                  "overflowing step is skipped and nothing diverges (measured for the ACB form)",
    "resnest2*": "as resnest101: a float16 overflow at O2 without loss scaling, not an ACB fault",
    "pvt_v2_b5": "the largest PVTv2 passes the sweep's 9 GB cap in its training step; a sweep cap, not a "
                 "defect: rerun with --mem_gb 16",
    "vgg19": "VGG-19 with its 224 px input passes the sweep's 9 GB cap while three copies are compared; a "
             "sweep cap: rerun with --mem_gb 16",
    "seresnet1[05]*": "float32 rounding, as res2net152: every ACB equals its folded conv on the ACB's own input "
                      "to 8e-7 (33 in seresnet101, 50 in seresnet152), the converted checkpoint computes what the "
                      "in-memory fold does (difference 0), but the eval-mode logits are 3e5 (101) and 4.5e9 (152), "
                      "and changing every ACB output by one float32 rounding (2^-24, random) moves them by 0.18 "
                      "to 0.22 (101) and up to 0.30 (152) of their size, as the 0.30 seen",
    "ghostnet_050": "float32 rounding of large eval-mode activations, not O3 (both checkpoints are float32) nor a "
                    "fold error: each of its 42 ACBs (depthwise included) equals its folded conv to 2.2e-7 on "
                    "its own input, the eval-mode logits are 6.8e4, and changing every ACB output by one float32 "
                    "rounding moves them by 7.5e-5 to 5.1e-4 of their size",
    "visformer*": "float32 rounding of large eval-mode activations, not O3 (both checkpoints are float32) nor a "
                  "fold error: every ACB (grouped 3 x 3, 8 groups) equals its folded conv to 1.5e-7 on its own "
                  "input; the eval-mode logits after the step are 3e3 (tiny), 5e3 (tiny_v2) and 3.5e9 "
                  "(small_v2), and changing every ACB output by one float32 rounding moves them by 1.6e-3 to "
                  "4.5e-3, 2.5e-3 to 2.9e-3 and 1.2e-4 to 3.6e-4 of their size, as the mismatches seen",
    "efficientnet_v2_xl": "the largest EfficientNet: the comparison holds three copies of it (the trained ACB "
                          "model, a fresh one and the stock one) besides the step's memory; a sweep cap, not "
                          "a defect: rerun with --models efficientnet_v2_xl --mem_gb 16",
}

#: where the recipe table comes from
RECIPES_SOURCE = ("MindCV's Ascend recipes, `configs/<family>/*_ascend.yaml` of mindspore-lab/mindcv "
                  "(commit 51b0636, July 2025)")
#: MindCV module (family) -> (amp_level, opt) of its recipes; the level most of the family's recipes use
FAMILY_RECIPES = {
    "bit": ("O0", "sgd"), "cmt": ("O2", "adamw"), "coat": ("O2", "adamw"), "convit": ("O2", "adamw"),
    "convnext": ("O2", "adamw"), "crossvit": ("O3", "adamw"), "densenet": ("O2", "momentum"),
    "dpn": ("O2", "sgd"), "edgenext": ("O2", "adamw"), "efficientnet": ("O2", "rmsprop"),
    "ghostnet": ("O3", "momentum"), "googlenet": ("O0", "momentum"), "halonet": ("O3", "adamw"),
    "hrnet": ("O2", "adamw"), "inceptionv3": ("O0", "momentum"), "inceptionv4": ("O2", "momentum"),
    "mixnet": ("O3", "momentum"), "mnasnet": ("O0", "rmsprop"), "mobilenetv1": ("O2", "momentum"),
    "mobilenetv2": ("O3", "momentum"), "mobilenetv3": ("O3", "momentum"), "mobilevit": ("O3", "adamw"),
    "nasnet": ("O0", "rmsprop"), "pit": ("O2", "adamw"), "poolformer": ("O3", "adamw"), "pvt": ("O2", "adamw"),
    "pvtv2": ("O2", "adamw"), "regnet": ("O2", "momentum"), "repmlp": ("O2", "adamw"),
    "repvgg": ("O0", "momentum"), "res2net": ("O3", "momentum"), "resnest": ("O2", "momentum"),
    "resnet": ("O2", "momentum"), "resnetv2": ("O2", "momentum"), "rexnet": ("O2", "sgd"),
    "senet": ("O2", "momentum"), "shufflenetv1": ("O0", "momentum"), "shufflenetv2": ("O3", "momentum"),
    "sknet": ("O2", "momentum"), "squeezenet": ("O0", "momentum"), "swintransformer": ("O2", "adamw"),
    "swintransformerv2": ("O2", "adamw"), "vgg": ("O2", "momentum"), "visformer": ("O3", "adamw"),
    "vit": ("O2", "adamw"), "volo": ("O3", "adamw"), "xception": ("O2", "sgd"), "xcit": ("O2", "adamw"),
}
#: models whose own recipe differs from their family's
MODEL_RECIPES = {
    "coat_mini": ("O2", "lion"), "coat_tiny": ("O2", "lion"), "crossvit_9": ("O2", "adamw"),
    "edgenext_small": ("O3", "adamw"), "edgenext_x_small": ("O3", "adamw"),
    "mnasnet_050": ("O3", "rmsprop"), "mnasnet_130": ("O3", "rmsprop"), "regnet_x_800mf": ("O3", "momentum"),
    "repvgg_b1g2": ("O2", "momentum"), "repvgg_b1g4": ("O2", "momentum"), "repvgg_b2g4": ("O2", "momentum"),
    "squeezenet1_1": ("O2", "momentum"),
}
#: families without a recipe (cait, mae, mlpmixer, pnasnet): O2, the level most of MindCV's Ascend recipes use
DEFAULT_RECIPE = ("O2", "momentum")

STAGES = ("build", "input", "train", "save", "convert", "load", "logits")
STAGE_TEXT = {"build": "build (ACB form)", "input": "input size", "train": "train step", "save": "save checkpoint",
              "convert": "convert", "load": "strict load", "logits": "logits", "stock": "stock model",
              "start": "start-up"}


def recipe_for(name, family):
    """(amp_level, opt) of ``name``: its own recipe's where it differs from its family's, else the family's."""
    return MODEL_RECIPES.get(name) or FAMILY_RECIPES.get(family) or DEFAULT_RECIPE


def families():
    """MindCV model name -> its family (the MindCV module that defines it)."""
    from mindcv.models.registry import list_models, list_modules

    return {model: module for module in list_modules() for model in list_models(module=module)}


def one_line(err, limit=300):
    """``Type: first meaningful line`` of an exception (MindSpore's rulers and blank lines skipped)."""
    for line in str(err).splitlines():
        line = line.strip()
        if line and not set(line) <= set("-=#* "):
            return f"{type(err).__name__}: {line}"[:limit]
    return type(err).__name__


# ---------------------------------------------------------------- one model (its own process)

class Record(dict):
    """The result of one model, rewritten to ``path`` after every stage so a killed worker leaves its stage."""

    def __init__(self, path, workdir, **fields):
        super().__init__(fields, errors={})
        self.path, self.workdir = path, workdir
        self.save()

    def save(self):
        self["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self, f)
        os.replace(tmp, self.path)

    def begin(self, stage):
        """Start ``stage``; the peak memory so far is noted as the previous stage's."""
        self.setdefault("peak_mb_after", {})[self["stage"]] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        with open("/proc/self/statm", encoding="ascii") as f:
            self.setdefault("rss_mb_before", {})[stage] = round(int(f.read().split()[1]) * PAGE / 2 ** 20)
        self["stage"] = stage
        self.save()

    def fail(self, stage, err):
        self["errors"][stage] = one_line(err).replace(self.workdir + os.sep, "")  # the same text every run
        trace = traceback.format_exception(type(err), err, err.__traceback__)
        self.setdefault("traces", {})[stage] = "".join(trace[-6:])[-2000:]  # in the JSON line only
        self.save()


def release():
    """Collect garbage and hand freed heap memory back to the system (glibc keeps it otherwise), so the
    peak of a later stage does not stack on an earlier one's."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def stock_size(name, ms, np):
    """``(size, None)``: the first of SIZES at which stock MindCV's model runs a forward pass in training
    mode on a batch; ``(None, error)`` if it builds or runs at none.

    Training mode, because some heads only run in training (inception_v3's auxiliary
    classifier needs 299 px; in eval mode 64 px would do).
    """
    import mindcv

    try:
        net = mindcv.create_model(name, num_classes=NUM_CLASSES)
    except Exception as err:  # noqa: BLE001  (whatever the stock model raises is what we report)
        return None, one_line(err)
    net.set_train(True)
    errors = []
    for size in SIZES:
        try:
            net(ms.Tensor(np.zeros((BATCH, 3, size, size), np.float32)))
            return size, None
        except Exception as err:  # noqa: BLE001
            errors.append(f"{size} px: {one_line(err, 150)}")
    return None, "; ".join(errors)


def worker(name, result_path, workdir):
    os.environ.setdefault("GLOG_v", "3")
    import mindcv
    import mindspore as ms
    import numpy as np

    from acnet_ms import acb_layout, acb_summary, create_model
    from acnet_ms.config import loader as config
    from acnet_ms.io.checkpoint import read_checkpoint, write_checkpoint
    from acnet_ms.convert.pipeline import convert_checkpoint
    from acnet_ms.engine.runtime import setup
    from acnet_ms.training.checkpoints import training_meta
    from acnet_ms.training.factories import build_train_step, lr_schedule

    family = families().get(name, "")
    amp, opt = recipe_for(name, family)
    rec = Record(result_path, workdir, model=name, family=family, amp=amp, opt=opt, status="running", stage="build")
    cfg = config.defaults()
    cfg.update(model=name, num_classes=NUM_CLASSES, block_type="acb", amp_level=amp, opt=opt, mode=1,
               device_target="CPU", batch_size=BATCH, epoch_size=1, warmup_epochs=0, decay_epochs=1,
               scheduler="constant", lr=LR, ckpt_save_dir=workdir)
    setup(cfg)  # PyNative, CPU, seed

    # 1. the ACB form
    try:
        net = create_model(name, num_classes=NUM_CLASSES, block_type="acb")
    except ValueError as err:
        if "no k x k conv" in str(err):
            text = str(err)
            reason = text[text.find("(") + 1:text.rfind(")")] if "(" in text else one_line(err)
            rec.update(status="no_acb", reason=reason)
            rec.save()
            return
        rec.fail("build", err)
    except Exception as err:  # noqa: BLE001
        rec.fail("build", err)
    if rec["errors"]:
        rec["stage"] = "stock"
        _, rec["stock_error"] = stock_size(name, ms, np)
        rec["status"] = "stock_fails" if rec["stock_error"] else "failed"
        rec.save()
        return
    rec["acbs"] = acb_summary(net)["acbs"]

    # 2. the input size: the first of SIZES at which the stock model trains (a model of its own: ours is untouched)
    rec.begin("input")
    size, rec["stock_error"] = stock_size(name, ms, np)
    release()
    if size is None:
        rec["status"] = "stock_fails"
        rec.save()
        return
    rec["size"] = size
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.normal(size=(BATCH, 3, size, size)).astype(np.float32))
    y = ms.Tensor(rng.integers(0, NUM_CLASSES, size=BATCH).astype(np.int32))

    # 3. one training step at the recipe's AMP level (the later stages run even if the step failed)
    rec.begin("train")
    step = None
    try:
        lrs = lr_schedule(cfg, 1)
        step, _ = build_train_step(net, cfg, lrs)
        loss, finite, _ = step(x, y)
        rec.update(loss=float(loss.asnumpy()), finite=bool(finite.asnumpy()))
        if not np.isfinite(rec["loss"]):
            raise FloatingPointError(f"loss is {rec['loss']}")
        params = list(net.get_parameters())
        bad = [p.name for p in params if not np.isfinite(p.asnumpy()).all()]
        if bad:
            rec["diverged"] = True
            raise FloatingPointError(f"diverged: {len(bad)} of {len(params)} parameters not "
                                     f"finite after the step (first {bad[0]}; loss {rec['loss']:.4g})")
    except Exception as err:  # noqa: BLE001
        rec.fail("train", err)
    if step is None:
        rec["status"] = "failed"
        rec.save()
        return

    # 4. the training checkpoint, as the epoch's end writes it
    rec.begin("save")
    src, dst = os.path.join(workdir, "train.ckpt"), os.path.join(workdir, "converted.ckpt")
    trained = "train" not in rec["errors"]
    try:
        meta = training_meta(cfg, acb_layout(net) or None, epoch=1 if trained else 0, step=1 if trained else 0,
                             lr=lrs[0], best_top1=None, val_top1=None, scaler_state=step.scaler_state())
        write_checkpoint(src, step, meta)
        rec["ckpt_mb"] = os.path.getsize(src) / 2 ** 20
    except Exception as err:  # noqa: BLE001
        rec.fail("save", err)
        rec["status"] = "failed"
        rec.save()
        return
    del step, net
    release()  # the trained network and its optimizer are in the file now

    # 5. conversion
    rec.begin("convert")
    try:
        summary = convert_checkpoint(src, dst, log=lambda *_: None)
        rec["converted_acbs"] = summary["acbs"]
        if summary["acbs"] != rec["acbs"]:
            raise AssertionError(f"folded {summary['acbs']} ACBs, the model has {rec['acbs']}")
    except Exception as err:  # noqa: BLE001
        rec.fail("convert", err)
        rec["status"] = "failed"
        rec.save()
        return

    # 6. strict load into the stock MindCV model
    rec.begin("load")
    try:
        stock = mindcv.create_model(name, num_classes=NUM_CLASSES)
        arrays, _ = read_checkpoint(dst)
        params = {k: ms.Parameter(ms.Tensor(v), name=k) for k, v in arrays.items()}
        not_loaded, unused = ms.load_param_into_net(stock, params, strict_load=True)
        if not_loaded or unused:
            raise AssertionError(f"{len(not_loaded)} parameters missing ({', '.join(not_loaded[:2]) or '-'}), "
                                 f"{len(unused)} unused ({', '.join(unused[:2]) or '-'})")
        if list(arrays) != [p.name for p in stock.get_parameters()]:
            rec["order_differs"] = True  # loads all the same; noted in the JSON line only
        del arrays, params
        release()
    except Exception as err:  # noqa: BLE001
        rec.fail("load", err)
        rec["status"] = "failed"
        rec.save()
        return

    # 7. logits: a fresh float32 ACB model with the training checkpoint's weights vs the stock model
    rec.begin("logits")
    if rec.get("diverged"):  # nothing to compare: both would compute NaN
        rec["status"] = "failed"
        rec.save()
        return
    try:
        fresh = create_model(name, num_classes=NUM_CLASSES, block_type="acb")
        trained_arrays, _ = read_checkpoint(src)
        for param in fresh.get_parameters():
            if param.name not in trained_arrays:
                raise KeyError(f"the training checkpoint lacks {param.name}")
            param.set_data(ms.Tensor(np.asarray(trained_arrays[param.name]).astype(np.float32)))
        fresh.set_train(False)
        stock.set_train(False)
        expected = fresh(x).asnumpy().astype(np.float64)
        got = stock(x).asnumpy().astype(np.float64)
        scale = np.abs(expected).max()
        if not (np.isfinite(expected).all() and np.isfinite(got).all()) or scale == 0:
            raise FloatingPointError(f"eval-mode logits not usable: {np.sum(~np.isfinite(expected))} of the ACB "
                                     f"model's and {np.sum(~np.isfinite(got))} of the stock model's are not "
                                     f"finite (max |ACB logit| {scale:.3g}; the step's loss {rec.get('loss')})")
        # relative to the largest logit, absolute below 1 (as the tests' assert_close: float32 rounding of
        # logits near zero is not a fold error)
        rec["logits_rel_err"] = float(np.abs(got - expected).max() / max(1.0, scale))
        if rec["logits_rel_err"] > TOL:
            rec["errors"]["logits"] = f"max relative error {rec['logits_rel_err']:.2e} > {TOL:.0e}"
    except Exception as err:  # noqa: BLE001
        rec.fail("logits", err)
    rec["status"] = "failed" if rec["errors"] else "ok"
    rec.save()


# ---------------------------------------------------------------- the driver

PAGE = os.sysconf("SC_PAGE_SIZE")


def group_rss(pgid):
    """Resident bytes of every process in process group ``pgid`` (the worker and anything it started)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # field 5 (pgrp); rss is field 24
                total += int(fields[21]) * PAGE
        except (OSError, ValueError, IndexError):
            continue
    return total


def kill_group(proc):
    """Kill the worker ``proc`` and whatever it started (its own process group), and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_one(name, args, logdir):
    """Run the worker of ``name`` under the time and memory caps; return its record."""
    import shutil
    import tempfile

    workdir = tempfile.mkdtemp(prefix=f"{name}.", dir=args.workdir)
    result = os.path.join(workdir, "result.json")
    log_path = os.path.join(logdir, f"{name}.log")
    cap = int(args.mem_gb * 2 ** 30) if args.mem_gb > 0 else None

    def limits():
        if cap:  # a backstop if memory grows faster than it is watched: twice the cap in address space
            soft = 2 * cap + 4 * 2 ** 30
            resource.setrlimit(resource.RLIMIT_AS, (soft, soft))

    env = dict(os.environ, GLOG_v=os.environ.get("GLOG_v", "3"), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--result", result, "--workdir", workdir]
    start = time.perf_counter()
    peak, killed = 0, None
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=limits)
        try:
            while proc.poll() is None:
                rss = group_rss(proc.pid)
                peak = max(peak, rss)
                elapsed = time.perf_counter() - start
                if cap and rss > cap:
                    killed = f"killed: resident memory {rss / 2 ** 30:.1f} GB over the {args.mem_gb:g} GB cap"
                elif elapsed > args.timeout:
                    killed = f"killed: timeout after {args.timeout:g} s"
                if killed:
                    kill_group(proc)
                    break
                time.sleep(0.25)
        except BaseException:
            kill_group(proc)
            shutil.rmtree(workdir, ignore_errors=True)
            raise
    seconds = time.perf_counter() - start
    try:
        with open(result, encoding="utf-8") as f:
            rec = json.load(f)
    except (OSError, ValueError):
        rec = dict(model=name, status="running", stage="start", errors={})
    shutil.rmtree(workdir, ignore_errors=True)
    if rec.get("status") == "running":  # the worker did not finish its stage
        if not killed:
            code = proc.returncode
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
            killed = f"crashed ({how}): {last_log_line(log_path)}"
        rec["errors"][rec.get("stage", "start")] = killed
        rec["status"] = "killed" if killed.startswith("killed") else "crashed"
    rec["seconds"] = round(seconds, 1)
    rec["peak_rss_mb"] = round(max(peak / 2 ** 20, rec.get("peak_rss_mb") or 0))
    rec["when"] = time.strftime("%Y-%m-%d %H:%M")
    return rec


def last_log_line(path):
    """The last meaningful line a crashed worker wrote (MindSpore's or Python's)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip() and not set(line.strip()) <= set("-=#* ")]
    except OSError:
        return "no output"
    return lines[-1][:300] if lines else "no output"


def select(patterns, names):
    """The models ``--models`` names (comma-separated names or glob patterns), in list order."""
    if not patterns:
        return list(names)
    chosen = set()
    for pattern in (p.strip() for p in patterns.split(",") if p.strip()):
        hits = fnmatch.filter(names, pattern)
        if not hits:
            import difflib

            close = difflib.get_close_matches(pattern, names, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            sys.exit(f"error: --models: {pattern!r} matches no MindCV model{hint}")
        chosen.update(hits)
    return [n for n in names if n in chosen]


def read_jsonl(path):
    """model -> its latest record."""
    records = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue  # a line cut short by an interrupted write
                    records[rec["model"]] = rec
    return records


# ---------------------------------------------------------------- the report

def _cell(rec, stage):
    if stage in rec["errors"]:
        return "**fail**"
    reached = STAGES.index(rec.get("stage", "build")) >= STAGES.index(stage) if rec.get("stage") in STAGES else False
    return "ok" if reached and rec["status"] != "no_acb" else "—"


def table_row(rec):
    name = f"`{rec['model']}`"
    gb = f"{rec.get('peak_rss_mb', 0) / 1024:.1f}"
    secs = f"{rec.get('seconds', 0):.0f}"
    recipe = f"{rec.get('amp', '?')} / {rec.get('opt', '?')}"
    if rec["status"] == "no_acb":
        return f"| {name} | no ACB | {recipe} | — | — | — | — | — | {secs} | {gb} |"
    if rec["status"] == "stock_fails":
        return f"| {name} | stock fails | {recipe} | — | — | — | — | — | {secs} | {gb} |"
    errors = rec["errors"]
    train = "**fail**" if "train" in errors or "save" in errors else _cell(rec, "train")
    if rec.get("diverged"):
        train = "**diverged**"
    if train == "ok" and rec.get("finite") is False:
        train = "ok (overflow)"
    logits = "—"
    if "logits_rel_err" in rec:
        logits = f"{rec['logits_rel_err']:.1e}" + (" **fail**" if "logits" in errors else "")
    elif "logits" in errors:
        logits = "**fail**"
    size = f"{rec['size']}" if rec.get("size") else ("**fail**" if "input" in errors else "—")
    acbs = rec.get("acbs", "**fail**" if "build" in errors else "—")
    return (f"| {name} | {acbs} | {recipe} | {size} | {train} | {_cell(rec, 'convert')} | {_cell(rec, 'load')} "
            f"| {logits} | {secs} | {gb} |")


def write_report(path, records, all_models, versions, family_of):
    recs = [records[n] for n in all_models if n in records]
    counts = {}
    for rec in recs:
        counts[rec["status"]] = counts.get(rec["status"], 0) + 1
    codes = ", ".join(dict.fromkeys(r.get("code", "unknown") for r in recs)) or "none"
    minutes = sum(r.get("seconds", 0) for r in recs) / 60
    spent = f"{minutes / 60:.1f} h" if minutes >= 90 else f"{minutes:.0f} min"
    failures = [r for r in recs if r["status"] in ("failed", "killed", "crashed")]
    lines = [
        "# Recipe sweep: every MindCV model with ACBs, one training step, conversion, strict load",
        "",
        "Written by `benchmarks/sweep.py` (`make sweep`); do not edit by hand.",
        "",
        f"**{len(recs)} of {len(all_models)} MindCV models** in this table: pass every step "
        f"{counts.get('ok', 0)}, fail {len(failures)}, no ACB {counts.get('no_acb', 0)}, stock model does not run "
        f"{counts.get('stock_fails', 0)} ({spent} of runs; {versions}; code: {codes}).",
        "",
        "For each model, in a process of its own (killed after `--timeout` seconds, default 600, or when its "
        "resident memory, watched four times a second, passes `--mem_gb`, default 10 GB; its address space is "
        "also limited to twice that plus 4 GB):",
        "",
        "1. **ACBs**: the ACB form is built by the project's factory, "
        "`acnet_ms.create_model(name, num_classes=10, block_type=\"acb\")`; the column is the number of k x k "
        "convs that became ACBs (`acnet_ms.acb_summary`). *no ACB*: the model has no eligible k x k conv "
        "(transformers, MLPs); the reasons are listed below. *stock fails*: MindCV's own model does not run a "
        "training-mode forward pass at any of the sizes (listed below): not an ACB problem.",
        f"2. **input**: the smallest of {', '.join(map(str, SIZES))} px at which stock MindCV's model runs a "
        f"forward pass in training mode (most run at 64; vgg needs 224, its classifier expects 7 x 7 features; "
        f"inception_v3 299, for its auxiliary head, which only runs in training). The batch: {BATCH} random "
        f"images (normal noise, seed 0), int32 labels.",
        "3. **train step**: one step of the project's train step (`acnet_ms.training.factories.build_train_step`, "
        f"the options of `acnet_ms.config.loader.defaults()` with the recipe's `amp_level` and `opt`, constant "
        f"lr {LR}, no warm-up, fixed loss scale 1) in **PyNative mode** on CPU (one step does not repay compiling "
        "a graph). *ok (overflow)*: the step ran but its gradients were not all finite. *diverged*: the step ran "
        "but left weights that are not finite (their logits are not compared).",
        "4. The step cell is saved with `acnet_ms.io.checkpoint.write_checkpoint` and the metadata training writes "
        "(identity, `acb_layout`, epoch, step, lr, config, loss-scale state), so the optimizer's slots are in "
        "the file as after a real epoch. If the step raised an error, the later steps still run, on the initial "
        "weights.",
        "5. **convert**: `acnet_ms.convert.pipeline.convert_checkpoint` on that file (and it folds as many ACBs as the "
        "model has).",
        "6. **strict load**: the converted file goes into the stock `mindcv.create_model(name, num_classes=10)` "
        "with `mindspore.load_param_into_net(..., strict_load=True)`: nothing missing, nothing unused.",
        "7. **logits**: in eval mode and float32, a fresh ACB model holding the training checkpoint's weights "
        "and the stock model holding the converted ones, on the same batch: max |difference| over max(1, the "
        f"largest |logit|); above {TOL:.0e} is a failure (as in `tests/test_mindcv_families.py`).",
        "",
        "**s**: wall time of the model's process (start-up and model builds included); **RSS**: its peak "
        "resident memory.",
        "",
        f"Run everything again: `make sweep` (about {_estimate(recs, len(all_models))}; on a shared machine "
        "`nice -n 10 make sweep`). Some models: "
        "`.venv/bin/python benchmarks/sweep.py --models resnet18,'mobilenet_v3_*'` (names or glob patterns); "
        "their new results replace their old rows. Continue an interrupted sweep: add `--resume` (models "
        "already in the JSON lines file are skipped). Other options: `--timeout` seconds, `--mem_gb` (0: no "
        "cap), `--jsonl` (default `sweep_out/sweep.jsonl`: one line per model, with the error tracebacks), "
        "`--out`.",
        "",
        "## AMP level and optimizer per family",
        "",
        f"From {RECIPES_SOURCE}: the level most of a family's recipes use, and their optimizer; the models "
        "whose own recipe differs are listed after the family. A family without a recipe runs "
        f"{DEFAULT_RECIPE[0]} with {DEFAULT_RECIPE[1]} (O2 is the level most of MindCV's Ascend recipes use).",
        "",
        "| family | AMP | optimizer | models with their own level/optimizer |",
        "|---|---|---|---|",
    ]
    for family, (amp, opt) in sorted(FAMILY_RECIPES.items()):
        own = ", ".join(f"`{m}` {a}/{o}" for m, (a, o) in sorted(MODEL_RECIPES.items())
                        if family_of.get(m) == family and (a, o) != (amp, opt))
        lines.append(f"| {family} | {amp} | {opt} | {own} |")
    lines += ["", "## Results", "",
              "| model | ACBs | AMP / opt | input | train step | convert | strict load | logits (max rel. err) "
              "| s | RSS (GB) |",
              "|---|---:|---|---:|---|---|---|---:|---:|---:|"]
    lines += [table_row(r) for r in recs]
    lines += ["", f"## Failures ({len(failures)})", ""]
    if not failures:
        lines.append("None.")
    for rec in failures:
        for stage in STAGES + ("start",):
            if stage in rec["errors"]:
                later = ""
                if stage == "train" and rec.get("diverged"):
                    later = " (convert and strict load then ran on these weights; logits not compared)"
                elif stage == "train" and rec.get("stage") in ("convert", "load", "logits"):
                    later = " (convert, load and logits then ran on the initial weights)"
                why = next((text for pattern, text in WHY.items() if fnmatch.fnmatch(rec["model"], pattern)), None)
                lines.append(f"- `{rec['model']}` ({rec.get('amp')}, {rec.get('opt')}), "
                             f"{STAGE_TEXT.get(stage, stage)}: {_md(rec['errors'][stage])}{later}"
                             + (f". *Why:* {why}." if why else ""))
    stock = [r for r in recs if r["status"] == "stock_fails"]
    if stock:
        lines += ["", f"## Stock MindCV model does not run ({len(stock)})", ""]
        lines += [f"- `{r['model']}`: {_md(r.get('stock_error') or '')}" for r in stock]
    no_acb = [r for r in recs if r["status"] == "no_acb"]
    if no_acb:
        lines += ["", f"## No ACB ({len(no_acb)})", ""]
        lines += [f"- `{r['model']}`: {_md(r.get('reason') or '')}" for r in no_acb]
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def _md(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def _estimate(recs, total):
    timed = [r["seconds"] for r in recs if r.get("seconds")]
    if not timed:
        return "an unknown time"
    minutes = sum(timed) / len(timed) * total / 60
    text = f"{minutes / 60:.1f} h" if minutes >= 90 else f"{minutes:.0f} min"
    return text if len(recs) == total else f"{text}, extrapolated from the {len(recs)} models above"


def code_state():
    """The commit the sweep runs, and whether the package has uncommitted changes (results depend on them)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        sha = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "acnet_ms")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha} + uncommitted changes to acnet_ms" if dirty else sha


def versions():
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("mindspore", "mindcv"):
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            pass
    return ", ".join(out + [f"{os.cpu_count()} CPU cores"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="", help="comma-separated names or glob patterns (default: all)")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "sweep.md"), help="markdown report")
    parser.add_argument("--jsonl", default=os.path.join(ROOT, "sweep_out", "sweep.jsonl"),
                        help="one JSON line per model, appended as each finishes")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per model before it is killed")
    parser.add_argument("--mem_gb", type=float, default=10,
                        help="kill a model whose resident memory passes this many GB (0: no cap)")
    parser.add_argument("--resume", action="store_true", help="skip the models already in --jsonl")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        code = 0
        try:
            worker(args.worker, args.result, args.workdir)
        except BaseException:  # noqa: BLE001  (a failure outside the stages: the driver reports the last line)
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)  # skip MindSpore's finalizers: the record is written

    os.environ.setdefault("GLOG_v", "3")
    family_of = families()
    all_models = sorted(family_of)
    names = select(args.models, all_models)
    jsonl = os.path.abspath(args.jsonl)
    os.makedirs(os.path.dirname(jsonl), exist_ok=True)
    args.workdir = os.path.join(os.path.dirname(jsonl), "work")
    logdir = os.path.join(os.path.dirname(jsonl), "logs")
    os.makedirs(args.workdir, exist_ok=True)
    os.makedirs(logdir, exist_ok=True)
    records = read_jsonl(jsonl)
    todo = [n for n in names if not (args.resume and n in records)]
    info = versions()
    code = code_state()
    print(f"{len(todo)} of {len(names)} selected models to run ({len(names) - len(todo)} already in {jsonl}); "
          f"timeout {args.timeout:g} s, memory cap {args.mem_gb:g} GB", flush=True)
    start = time.perf_counter()
    try:
        for i, name in enumerate(todo, 1):
            rec = run_one(name, args, logdir)
            rec["code"] = code
            with open(jsonl, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
            records[name] = rec
            write_report(args.out, records, all_models, info, family_of)
            first = next((f"{STAGE_TEXT.get(s, s)}: {rec['errors'][s]}" for s in STAGES + ("start",)
                          if s in rec["errors"]), "")
            shown = {"no_acb": "no ACB", "stock_fails": "stock model fails"}.get(rec["status"], rec["status"])
            elapsed = time.perf_counter() - start
            print(f"[{i}/{len(todo)}] {name}: {shown}{' (' + first[:160] + ')' if first else ''}; "
                  f"{rec['seconds']:.0f} s, {rec['peak_rss_mb'] / 1024:.1f} GB; "
                  f"eta {(elapsed / i * (len(todo) - i)) / 60:.0f} min", flush=True)
    except KeyboardInterrupt:
        print("interrupted: continue with --resume", flush=True)
        return 130
    write_report(args.out, records, all_models, info, family_of)
    print(f"wrote {args.out} and {jsonl}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
