"""Checkpoint files: read to numpy, write atomically, carry the model's identity.

A checkpoint written by acnet_ms holds the network's parameters and one
string entry, ``acnet_ms_meta``: a JSON object with the model's identity
(``model``, ``block_type``, ``num_classes``, ...).  MindSpore's loaders
report that entry as "not loaded" and otherwise ignore it.
"""
import json
import os

import numpy as np

from . import fold
from .cli import UserError

META_KEY = "acnet_ms_meta"


def read_checkpoint(path):
    """Return ``(arrays, meta)``: parameter name -> numpy array, and the identity dict ({} if none)."""
    import mindspore as ms

    if not os.path.exists(path):
        raise UserError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise UserError(f"{path}: not a file")
    try:
        raw = ms.load_checkpoint(path)
    except Exception as err:  # MindSpore raises ValueError/RuntimeError/... for damaged files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: not a readable MindSpore checkpoint ({reason})") from None
    if not raw:
        raise UserError(f"{path}: not a readable MindSpore checkpoint (no entries)")
    meta, arrays = {}, {}
    for name, value in raw.items():
        if name == META_KEY:
            try:
                meta = json.loads(value)
            except (TypeError, ValueError):
                raise UserError(f"{path}: entry '{META_KEY}' is not valid JSON") from None
        elif not isinstance(value, str):
            arrays[name] = value.asnumpy()
    return arrays, meta


def write_checkpoint(path, data, meta=None):
    """Write ``data`` (name -> numpy array, or a Cell's parameters) and ``meta`` to ``path`` atomically.

    The data goes to a temporary file in the destination folder, which is
    renamed over ``path`` only once complete: a reader never sees a partial file.
    """
    import mindspore as ms

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f"{path}: output folder {folder} does not exist")
    # MindSpore appends ".ckpt" to names that lack it, so the temporary name keeps the suffix
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp.ckpt")
    if isinstance(data, dict):
        data = [{"name": name, "data": ms.Tensor(np.ascontiguousarray(value))} for name, value in data.items()]
    append = {META_KEY: json.dumps(meta, sort_keys=True)} if meta else None
    try:
        with open(tmp, "wb"):  # fails here, quietly, if the folder is not writable
            pass
        ms.save_checkpoint(data, tmp, append_dict=append)
        os.replace(tmp, path)
    except (OSError, RuntimeError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: cannot write checkpoint in {folder} ({reason})") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def net_state(state, net):
    """Adapt a checkpoint's arrays to ``net``'s block type, by the fold identities.

    Optimizer state is dropped.  A training-form ACB checkpoint loaded into a
    plain model is folded; a plain checkpoint loaded into an ACB model puts each
    conv + BN into the ACB's square branch with the asymmetric branches
    switched off (:func:`fold.plain_to_acb`), so the ACB model computes the
    plain one's function.
    """
    from .layers import ACBlock

    state = {k: v for k, v in state.items() if not fold.is_training_state(k)}
    acbs = [name for name, cell in net.cells_and_names() if isinstance(cell, ACBlock) and not cell.deploy]
    if fold.acb_prefixes(state) and not acbs:
        state, _ = fold.fold_state(state)
    elif acbs:
        state = fold.plain_to_acb(state, acbs)
    return state


def load_pretrained(net, path, log=print):
    """Finetuning start: load every parameter of ``path`` that matches ``net`` by name and shape.

    Parameters whose shape differs (a classifier for another number of
    classes) are skipped and named in the log; so are the parameters the
    checkpoint lacks.  Returns the names loaded.
    """
    import mindspore as ms

    arrays, meta = read_checkpoint(path)
    if meta.get("deploy"):
        raise UserError(f"{path}: a fully folded checkpoint (convert.py --fold_bn) has no BatchNorm left to "
                        f"train; start from the checkpoint it was converted from")
    try:
        state = net_state(arrays, net)
    except ValueError as err:
        raise UserError(f"{path}: {err}") from None
    loaded, skipped, absent = [], [], []
    for param in net.get_parameters():
        value = state.get(param.name)
        if value is None:
            absent.append(param.name)
        elif tuple(value.shape) != tuple(param.shape):
            skipped.append(f"{param.name} {list(value.shape)} (model: {list(param.shape)})")
        else:
            param.set_data(ms.Tensor(value.astype(ms.dtype_to_nptype(param.dtype))))
            loaded.append(param.name)
    if not loaded:
        raise UserError(f"{path}: no parameter matches the model by name and shape")
    log(f"loaded {len(loaded)} of {len(loaded) + len(skipped) + len(absent)} parameters from {path}")
    if skipped:
        log(f"skipped (shape differs): {', '.join(skipped)}")
    if absent:
        log(f"not in the checkpoint, kept as initialised: {len(absent)} ({', '.join(absent[:4])}"
            f"{', ...' if len(absent) > 4 else ''})")
    return loaded
