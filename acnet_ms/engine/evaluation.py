"""Evaluation: top-1 / top-5 and loss of a network over a split, and validate.py's checkpoint loading.

The analyses (:mod:`acnet_ms.analysis`) and ``validate.py`` evaluate through
this module only; training calls :func:`evaluate` at the end of its epochs.
"""
import time

import numpy as np

from . import data
from ..io.checkpoint import mismatch, shapes_of
from .loading import net_state
from ..cli import UserError
from ..config.loader import FLAT_BLOCK_KEYS, IDENTITY, OPTIONS
from .runtime import apply_amp, build_model, fmt_time, setup


def evaluate(net, loader, world=1, transform=None, progress=None, every=100):
    """Top-1 / top-5 counts, summed loss and sample count over the whole split (summed over ranks).

    ``transform``, if given, maps each batch of images (a numpy NCHW array, after
    the loader's own transforms) to the batch the network sees.  ``progress``,
    if given, is called with a line (batches, samples/s, ETA) every ``every``
    batches and after the last.
    """
    import mindspore as ms

    net.set_train(False)
    totals = np.zeros(4)
    batches = loader.get_dataset_size() if progress is not None else None
    start = time.perf_counter()
    try:
        for i, (image, label) in enumerate(loader.create_tuple_iterator(num_epochs=1), 1):
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
            if progress is not None and (i % max(1, every) == 0 or i == batches):
                seconds = time.perf_counter() - start
                progress(f"validation batch {i}/{batches}: {int(totals[3])} samples, "
                         f"{totals[3] / seconds:.1f} samples/s, eta {fmt_time(seconds / i * (batches - i))}")
    except RuntimeError as err:
        raise data.pipeline_error(err) or err from None
    if world > 1:
        totals = ms.ops.AllReduce()(ms.Tensor(totals.astype(np.float32))).asnumpy().astype(np.float64)
    correct1, correct5, loss_sum, n = totals
    n = int(round(n))
    return dict(top1=correct1 / n, top5=correct5 / n, loss=loss_sum / n, samples=n,
                correct1=int(round(correct1)))


def recorded_options(meta, where="the checkpoint"):
    """The options a checkpoint recorded (its training config and identity), as defaults for validate.py;
    UserError naming ``ACNET_MS_KINDS`` if its block kind is not loaded."""
    from ..kinds.table import check_recorded_kind

    check_recorded_kind(meta.get("block_type"), where)
    recorded = dict(meta.get("config") or {})
    recorded.update({k: meta[k] for k in IDENTITY + FLAT_BLOCK_KEYS if k in meta})
    skip = ("ckpt_path", "resume", "distribute", "device_target")
    return {k: v for k, v in recorded.items() if k in OPTIONS and k not in skip}


def validate(cfg, arrays, deploy=False, folded_bn=False, log=print, meta=None):
    """Evaluate the checkpoint ``arrays`` (name -> numpy) on the ``val`` split; returns the metrics dict.

    ``deploy``: fold the blocks in memory first (for a model with blocks of
    its own, a native kind's such as MindCV's RepVGG: fold everything into
    its deploy form, ``create_model(..., deploy=True)``).  ``folded_bn``: the checkpoint is
    of the fully folded model (``convert.py --fold_bn``), which has one form:
    ``create_model(..., deploy=True)``, whatever ``block_type`` says.  The
    network runs at ``val_amp_level``.
    """
    net, loader, world = eval_setup(cfg, arrays, deploy, folded_bn, log, meta)
    return evaluate(net, loader, world, progress=log, every=cfg["log_interval"])


def eval_setup(cfg, arrays, deploy=False, folded_bn=False, log=print, meta=None):
    """What :func:`validate` evaluates: ``(net, loader, world)``, the loaded network in eval mode.

    The analyses (``acnet_ms.analysis``) evaluate through this and
    :func:`evaluate`, so their numbers are validate.py's.
    """
    import mindspore as ms

    from ..reparam.switch import switch_to_deploy
    from ..reparam.transform import native_blocks

    path = cfg["ckpt_path"]
    spec = data.inspect(cfg, "val")
    data.check_num_classes(spec, cfg["num_classes"], "validation")
    if not cfg.get("any_class_names"):
        data.check_class_names(spec, (meta or {}).get("class_names"), path, "--any_class_names")
    context = setup(cfg, log=log)
    try:
        # every parameter is set from the checkpoint below: no random weights are drawn first
        if folded_bn:
            net = build_model(cfg, deploy=True, initialised=False)
        else:
            net = build_model(cfg, initialised=False)
            if deploy and native_blocks(net):  # the checkpoint's blocks and the model's own fold on loading
                folded_bn = True
                net = build_model(cfg, deploy=True, initialised=False)
        # where an ACB checkpoint's folds go: its recorded layout, else the ACB options it was trained with
        recorded = {k: cfg[k] for k in IDENTITY if k in cfg}
        state = net_state(arrays, net, dict(recorded, **(meta or {})))
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
    apply_amp(net, cfg["val_amp_level"], cfg["amp_cast_list"])
    loader = data.create_loader(cfg, spec, False, context.rank, context.world, data.workers(cfg, log))
    return net, loader, context.world
