"""The sweep's workload: one MindCV model with one block kind, through one training step, a conversion,
a strict load into stock MindCV and a comparison of logits (``benchmarks/sweep.py`` runs it per model).

    python benchmarks/sweep_step.py --worker '{"kind": "sweep", "model": ..., "block_type": ..., "workdir": ...}'
                                    --result <file>   (what harness.run starts)

Each stage is one function; the record is rewritten to the result file as each
stage begins, so a worker killed for its memory or time leaves the stage it was in.
The kind comes from the table (``acnet_ms.kinds.get_kind``); nothing here names one.
"""
import os
import sys
import time
import traceback

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
import harness  # noqa: E402  (benchmarks/ is not a package)
from recipes import BATCH, LR, NUM_CLASSES, ROUNDING_FACTOR, SIZES, TOL, families, recipe_for  # noqa: E402


def one_line(err, limit=300):
    """``Type: first meaningful line`` of an exception (MindSpore's rulers and blank lines skipped)."""
    for line in str(err).splitlines():
        line = line.strip()
        if line and not set(line) <= set("-=#* "):
            return f"{type(err).__name__}: {line}"[:limit]
    return type(err).__name__


class Record(dict):
    """The result of one model, rewritten to ``path`` after every stage so a killed worker leaves its stage."""

    def __init__(self, path, workdir, **fields):
        super().__init__(fields, errors={})
        self.path, self.workdir = path, workdir
        self._started = time.monotonic()
        self.save()

    def _clock(self):
        """The seconds the current stage took, under ``stage_s`` (the JSON line only: where a model's time goes)."""
        now = time.monotonic()
        self.setdefault("stage_s", {})[self["stage"]] = round(now - self._started, 1)
        self._started = now

    def save(self):
        harness.write_result(self.path, self)

    def begin(self, stage):
        """Start ``stage``; the peak memory so far is noted as the previous stage's."""
        self.setdefault("peak_mb_after", {})[self["stage"]] = round(harness.peak_rss_mb())
        self.setdefault("rss_mb_before", {})[stage] = round(harness.rss_mb())
        self._clock()
        self["stage"] = stage
        self.save()

    def fail(self, stage, err):
        self["errors"][stage] = one_line(err).replace(self.workdir + os.sep, "")  # the same text every run
        trace = traceback.format_exception(type(err), err, err.__traceback__)
        self.setdefault("traces", {})[stage] = "".join(trace[-6:])[-2000:]  # in the JSON line only
        self.save()

    def end(self, status):
        self._clock()
        self["status"] = status
        self.save()


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


# ---------------------------------------------------------------- the stages

def build_stage(rec, name, block_type):
    """1. The kind's form of ``name``, or None (the record then says why: no block, or a failure, with
    whether the stock model fails too)."""
    import mindspore as ms
    import numpy as np

    from acnet_ms import block_summary, create_model

    try:
        net = create_model(name, num_classes=NUM_CLASSES, block_type=block_type)
        rec["blocks"] = block_summary(net)["blocks"]
        return net
    except ValueError as err:
        text = str(err)
        if "no k x k conv" in text:
            rec["reason"] = text[text.find("(") + 1:text.rfind(")")] if "(" in text else one_line(err)
            rec.end("no_block")
            return None
        if "the family of block_type" in text:  # the model's own blocks are the kind's family: refused
            rec["reason"] = text[text.find("own blocks"):text.find(":")].replace("own blocks", "its own blocks", 1)
            rec.end("no_block")
            return None
        rec.fail("build", err)
    except Exception as err:  # noqa: BLE001
        rec.fail("build", err)
    rec["stage"] = "stock"
    _, rec["stock_error"] = stock_size(name, ms, np)
    rec.end("stock_fails" if rec["stock_error"] else "failed")
    return None


def train_stage(rec, net, cfg, x, y):
    """3. One training step at the recipe's AMP level; ``(step cell or None, lr schedule)``. A step that
    raises is recorded and the later stages still run (on the initial weights) if the step cell was built."""
    import numpy as np

    from acnet_ms.training.factories import build_train_step, lr_schedule

    rec.begin("train")
    step, lrs = None, None
    try:
        lrs = lr_schedule(cfg, 1)
        step, _ = build_train_step(net, cfg, lrs)
        # a copy: MindSpore 2.8's PyNative mixed precision can cast the step's input tensor in place (measured on
        # EfficientNet at O2, a block at the stem), and the later stages feed x to float32 models
        loss, finite, _ = step(type(x)(x.asnumpy()), y)
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
    return step, lrs


def save_stage(rec, net, step, cfg, lrs, src):
    """4. The training checkpoint, as the epoch's end writes it; False if it could not be written."""
    from acnet_ms import block_layout
    from acnet_ms.io.checkpoint import write_checkpoint
    from acnet_ms.training.checkpoints import training_meta

    rec.begin("save")
    trained = "train" not in rec["errors"]
    try:
        meta = training_meta(cfg, block_layout(net) or None, epoch=1 if trained else 0, step=1 if trained else 0,
                             lr=lrs[0], best_top1=None, val_top1=None, scaler_state=step.scaler_state())
        write_checkpoint(src, step, meta)
        rec["ckpt_mb"] = os.path.getsize(src) / 2 ** 20
        return True
    except Exception as err:  # noqa: BLE001
        rec.fail("save", err)
        return False


def convert_stage(rec, src, dst):
    """5. ``convert_checkpoint`` on the training checkpoint; False if it failed or folded too few blocks."""
    from acnet_ms.convert.pipeline import convert_checkpoint

    rec.begin("convert")
    try:
        summary = convert_checkpoint(src, dst, log=lambda *_: None)
        rec["converted_blocks"] = summary["blocks"]
        if summary["blocks"] != rec["blocks"]:
            raise AssertionError(f"folded {summary['blocks']} blocks, the model has {rec['blocks']}")
        return True
    except Exception as err:  # noqa: BLE001
        rec.fail("convert", err)
        return False


def load_stage(rec, name, dst):
    """6. The converted file strict-loaded into the stock MindCV model; the model, or None."""
    import mindcv
    import mindspore as ms

    from acnet_ms.io.checkpoint import read_checkpoint
    from acnet_ms.models.factory import build_uninitialised

    rec.begin("load")
    try:
        stock = build_uninitialised(lambda: mindcv.create_model(name, num_classes=NUM_CLASSES))
        arrays, _ = read_checkpoint(dst)
        params = {k: ms.Parameter(ms.Tensor(v), name=k) for k, v in arrays.items()}
        not_loaded, unused = ms.load_param_into_net(stock, params, strict_load=True)
        if not_loaded or unused:
            raise AssertionError(f"{len(not_loaded)} parameters missing ({', '.join(not_loaded[:2]) or '-'}), "
                                 f"{len(unused)} unused ({', '.join(unused[:2]) or '-'})")
        if list(arrays) != [p.name for p in stock.get_parameters()]:
            rec["order_differs"] = True  # loads all the same; noted in the JSON line only
        del arrays, params
        harness.release()
        return stock
    except Exception as err:  # noqa: BLE001
        rec.fail("load", err)
        return None


def site_errors(fresh, stock, np, ms):
    """``(max relative error, site)`` of the fold site by site: each block of the eval-mode block model against
    the stock model's conv holding the converted weights (and its BN, for a block in the BN's slot), on a random
    input of its own (16 x 16, normal noise), so that no other layer's numbers enter."""
    from acnet_ms.reparam.record import record_of

    cells, stock_cells = dict(fresh.cells_and_names()), dict(stock.cells_and_names())
    rng = np.random.default_rng(1)
    worst = (0.0, None)
    for name, slot in record_of(fresh).blocks.items():
        conv = stock_cells[name]
        x = ms.Tensor(rng.normal(size=(1, conv.in_channels, 16, 16)).astype(np.float32))
        want = cells[name](x).asnumpy().astype(np.float64)
        got = conv(x)
        if slot["slot"] == "bn":
            got = stock_cells[slot["bn_cell"]](got)
        err = float(np.abs(got.asnumpy().astype(np.float64) - want).max() / max(1.0, np.abs(want).max()))
        err = err if np.isfinite(err) else np.inf  # NaN weights (a diverged step) must not compare as exact
        worst = max(worst, (err, name), key=lambda t: t[0])
    return worst


def first_overflow(fresh, x, np):
    """``(logits, block or None)``: the block model's eval-mode logits on ``x`` and the first block (in call order)
    whose output is not finite: where float32 overflowed, if it did."""
    seen = []

    def hook(name):
        def record(cell, inputs, output):
            if not seen and not np.isfinite(output.asnumpy()).all():
                seen.append(name)
        return record

    return logits_with_hooks(fresh, x, np, hook), (seen[0] if seen else None)


def logits_with_hooks(fresh, x, np, hook_of):
    """The block model's logits on ``x`` (float64) with ``hook_of(block name)`` as a forward hook on every block
    (a hook that returns a Tensor replaces the block's output); the hooks are removed after."""
    from acnet_ms.reparam.switch import reparam_blocks

    handles = [cell.register_forward_hook(hook_of(name)) for name, cell in reparam_blocks(fresh)]
    try:
        return fresh(x).asnumpy().astype(np.float64)
    finally:
        for handle in handles:
            handle.remove()


def site_error_movement(fresh, x, base, np, ms, size, draws=2):
    """How far errors of the size the site check measured move the block model's eval-mode logits ``base`` (on
    ``x``): every block's output gets ``size`` times its largest |value|, with a random sign per element (a fold's
    float32 error is absolute: a conv's sum of K products rounds at the scale of its largest terms), ``draws``
    times; the largest change, over max(1, the largest |logit|).  A deep model after one step at batch 2 can
    amplify that by 1e6."""
    rng = np.random.default_rng(2)

    def nudge(cell, inputs, output):
        signs = rng.choice((-1.0, 1.0), size=output.shape).astype(np.float32)
        return output + ms.Tensor(signs * np.float32(size)) * ms.ops.abs(output).max()

    scale = max(1.0, float(np.abs(base).max()))
    moved = [np.abs(logits_with_hooks(fresh, x, np, lambda name: nudge) - base).max() for _ in range(draws)]
    return float(max(moved)) / scale


def logits_stage(rec, name, block_type, src, stock, x):
    """7. The fold, site by site (:func:`site_errors`), then a fresh float32 model of the kind holding the training
    checkpoint's weights against the stock model holding the converted ones, in eval mode: max |difference| over
    max(1, the largest |logit|).  Where the block model's eval-mode activations overflow float32 (after one step
    of batch 2 the BNs' running statistics are far from the batch's, and a deep model's eval forward can grow past
    3.4e38), the two models round and overflow in different places: their logits are recorded but not compared,
    and the site-by-site check decides.  Where the logits differ by more than the tolerance but no more than
    ``ROUNDING_FACTOR`` times what an error of the sites' measured size at every block output moves them
    (:func:`site_error_movement`), the model's eval forward amplifies the fold's float32 rounding beyond the
    tolerance: the difference is recorded with that movement and, the sites being exact, is not a fold error."""
    import mindspore as ms
    import numpy as np

    from acnet_ms import create_model
    from acnet_ms.io.checkpoint import read_checkpoint
    from acnet_ms.models.factory import build_uninitialised

    rec.begin("logits")
    try:
        fresh = build_uninitialised(lambda: create_model(name, num_classes=NUM_CLASSES, block_type=block_type))
        trained_arrays, _ = read_checkpoint(src)
        for param in fresh.get_parameters():
            if param.name not in trained_arrays:
                raise KeyError(f"the training checkpoint lacks {param.name}")
            param.set_data(ms.Tensor(np.asarray(trained_arrays[param.name]).astype(np.float32)))
        fresh.set_train(False)
        stock.set_train(False)
        rec["sites_rel_err"], worst = site_errors(fresh, stock, np, ms)
        if rec["sites_rel_err"] > TOL:
            rec["errors"]["logits"] = f"site {worst}: max relative error {rec['sites_rel_err']:.2e} > {TOL:.0e}"
            return
        expected, overflow = first_overflow(fresh, x, np)
        got = stock(x).asnumpy().astype(np.float64)
        scale = np.abs(expected).max()
        if overflow:
            rec["overflow_at"] = overflow
        elif not (np.isfinite(expected).all() and np.isfinite(got).all()) or scale == 0:
            raise FloatingPointError(f"eval-mode logits not usable: {np.sum(~np.isfinite(expected))} of the block "
                                     f"model's and {np.sum(~np.isfinite(got))} of the stock model's are not "
                                     f"finite (max |block-model logit| {scale:.3g}; the step's loss {rec.get('loss')})")
        # relative to the largest logit, absolute below 1 (as the tests' assert_close: float32 rounding of
        # logits near zero is not a fold error)
        rec["logits_rel_err"] = float(np.abs(got - expected).max() / max(1.0, scale))
        if rec["logits_rel_err"] > TOL and not overflow:
            size = max(rec["sites_rel_err"], 2.0 ** -24)
            rec["rounding_rel"] = site_error_movement(fresh, x, expected, np, ms, size)
            if rec["logits_rel_err"] > ROUNDING_FACTOR * rec["rounding_rel"]:
                rec["errors"]["logits"] = (f"max relative error {rec['logits_rel_err']:.2e} > {TOL:.0e}, and more "
                                           f"than {ROUNDING_FACTOR} times the {rec['rounding_rel']:.1e} that an "
                                           f"error of the sites' {size:.1e} at every block output moves them by")
    except Exception as err:  # noqa: BLE001
        rec.fail("logits", err)


# ---------------------------------------------------------------- one model

def sweep_config(name, block_type, amp, opt, workdir, mode=1):
    """The options of the model's training step: the defaults, the recipe's AMP level and optimizer, ``mode``
    (1 PyNative, 0 graph)."""
    from acnet_ms.config import loader as config

    cfg = config.defaults()
    cfg.update(model=name, num_classes=NUM_CLASSES, block_type=block_type, amp_level=amp, opt=opt, mode=mode,
               device_target="CPU", batch_size=BATCH, epoch_size=1, warmup_epochs=0, decay_epochs=1,
               scheduler="constant", lr=LR, ckpt_save_dir=workdir)
    return cfg


def pynative(ms):
    """Run what follows in PyNative mode (the input size, the logits, their hooks): only the train step is the
    sweep's subject in graph mode, and a forward pass of each model and size would compile a graph of its own."""
    ms.set_context(mode=ms.PYNATIVE_MODE)


def work_sweep(spec, result_path):
    """Model ``spec["model"]`` with block kind ``spec["block_type"]`` through every stage, its train step in
    ``spec["mode"]`` (1 PyNative, the default; 0 graph) (2. is the input size: the first of SIZES at which the
    stock model trains, on a model of its own)."""
    os.environ.setdefault("GLOG_v", "3")
    import mindspore as ms
    import numpy as np

    from acnet_ms.engine.runtime import setup

    name, block_type, workdir, mode = spec["model"], spec["block_type"], spec["workdir"], spec.get("mode", 1)
    family = families().get(name, "")
    amp, opt = recipe_for(name, family)
    rec = Record(result_path, workdir, model=name, block_type=block_type, family=family, amp=amp, opt=opt,
                 mode=mode, status="running", stage="build")
    cfg = sweep_config(name, block_type, amp, opt, workdir, mode)
    setup(cfg)  # the mode (and its jit level), CPU, seed
    pynative(ms)
    net = build_stage(rec, name, block_type)
    if net is None:
        return None
    rec.begin("input")
    size, rec["stock_error"] = stock_size(name, ms, np)
    harness.release()
    if size is None:
        return rec.end("stock_fails")
    rec["size"] = size
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.normal(size=(BATCH, 3, size, size)).astype(np.float32))
    y = ms.Tensor(rng.integers(0, NUM_CLASSES, size=BATCH).astype(np.int32))
    ms.set_context(mode=ms.GRAPH_MODE if mode == 0 else ms.PYNATIVE_MODE)
    step, lrs = train_stage(rec, net, cfg, x, y)
    pynative(ms)
    src, dst = os.path.join(workdir, "train.ckpt"), os.path.join(workdir, "converted.ckpt")
    if step is None or not save_stage(rec, net, step, cfg, lrs, src):
        return rec.end("failed")
    del step, net
    harness.release()  # the trained network and its optimizer are in the file now
    stock = load_stage(rec, name, dst) if convert_stage(rec, src, dst) else None
    if stock is None or rec.get("diverged"):  # diverged: nothing to compare, both would compute NaN
        if stock is not None:
            rec.begin("logits")
        return rec.end("failed")
    logits_stage(rec, name, block_type, src, stock, x)
    return rec.end("failed" if rec["errors"] else "ok")


WORKERS = {"sweep": work_sweep}


if __name__ == "__main__":
    harness.worker_entry(WORKERS)
