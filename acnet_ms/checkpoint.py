"""Checkpoint files: read to numpy, write atomically, carry the model's identity.

A checkpoint written by acnet_ms holds the network's parameters and one
string entry, ``acnet_ms_meta``: a JSON object with the model's identity
(``model``, ``block_type``, ``num_classes``, ...).  MindSpore's loaders
report that entry as "not loaded" and otherwise ignore it.
"""
import json
import os

import numpy as np

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


def write_checkpoint(path, arrays, meta=None):
    """Write ``arrays`` (name -> numpy array) and ``meta`` to ``path`` atomically.

    The data goes to a temporary file in the destination folder, which is
    renamed over ``path`` only once complete: a reader never sees a partial file.
    """
    import mindspore as ms

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f"{path}: output folder {folder} does not exist")
    # MindSpore appends ".ckpt" to names that lack it, so the temporary name keeps the suffix
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp.ckpt")
    entries = [{"name": name, "data": ms.Tensor(np.ascontiguousarray(value))} for name, value in arrays.items()]
    append = {META_KEY: json.dumps(meta, sort_keys=True)} if meta else None
    try:
        with open(tmp, "wb"):  # fails here, quietly, if the folder is not writable
            pass
        ms.save_checkpoint(entries, tmp, append_dict=append)
        os.replace(tmp, path)
    except (OSError, RuntimeError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: cannot write checkpoint in {folder} ({reason})") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
