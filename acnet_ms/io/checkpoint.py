"""Checkpoint files: read to numpy, write atomically, carry the model's identity.

A checkpoint written by acnet_ms holds the network's parameters and one
string entry, ``acnet_ms_meta``: a JSON object with the model's identity
(``model``, ``block_type``, ``num_classes``, ...).  MindSpore's loaders
report that entry as "not loaded" and otherwise ignore it.

This module depends on nothing of the package above :mod:`acnet_ms.cli`: what
a checkpoint's arrays mean for a network (folding, adapting) is
:mod:`acnet_ms.engine.loading`'s and :mod:`acnet_ms.convert`'s.
"""
import json
import os
import re

import numpy as np

from ..cli import UserError, first_line
from .._moved import moved_attr as _moved_attr

META_KEY = "acnet_ms_meta"
#: the temporary file :func:`write_checkpoint` writes first: ``.<name>.<pid>.tmp.ckpt`` (group 1: the pid), or
#: ``.<name>.<pid>.tmp.tmp``, MindSpore's own while it writes that one (left by a process killed meanwhile)
TMP_FILE = re.compile(r"^\..+\.(\d+)\.tmp\.(ckpt|tmp)$")


class _NotPlain(Exception):
    """A file layout the fast reader leaves to MindSpore's loader."""


#: MindSpore's tensor type names -> numpy dtypes (bfloat16 and map tensors go to MindSpore's loader)
_NP_TYPES = {"Float16": np.float16, "Float32": np.float32, "Float64": np.float64, "Bool": np.bool_,
             "Int8": np.int8, "Int16": np.int16, "Int32": np.int32, "Int64": np.int64,
             "UInt8": np.uint8, "UInt16": np.uint16, "UInt32": np.uint32, "UInt64": np.uint64}


def _varint(buf, pos):
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf, start, end):
    """(field number, wire type, value) of one protobuf message; value is (start, end) for bytes fields."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = (pos, pos + size), pos + size
        else:
            raise _NotPlain(f"wire type {wire}")
        yield field, wire, value
    if pos != end:
        raise _NotPlain("truncated message")


def _read_plain(path):
    """Read an unencrypted MindSpore .ckpt without MindSpore: name -> numpy array (or str).

    The file is a protobuf ``Checkpoint`` of ``Value {tag, TensorProto {dims,
    tensor_type, tensor_content}}``; a large tensor is split over consecutive
    values with the same tag, and a trailer ``crc_num`` + 10 bytes may follow.
    Arrays are read-only views of the file's bytes.  Anything else raises
    :class:`_NotPlain`.
    """
    with open(path, "rb") as f:
        buf = f.read()
    if buf[-17:-10] == b"crc_num":
        buf = buf[:-17]
    view = memoryview(buf)
    entries = []
    for field, wire, span in _fields(buf, 0, len(buf)):
        if (field, wire) != (1, 2):
            raise _NotPlain(f"field {field}")
        tag, dims, dtype, content = None, [], None, None
        for f2, w2, v2 in _fields(buf, *span):
            if (f2, w2) == (1, 2):
                tag = str(view[v2[0]:v2[1]], "utf-8")
            elif (f2, w2) == (2, 2):
                for f3, w3, v3 in _fields(buf, *v2):
                    if (f3, w3) == (1, 0):
                        dims.append(v3)
                    elif (f3, w3) == (1, 2):  # packed dims
                        pos = v3[0]
                        while pos < v3[1]:
                            dim, pos = _varint(buf, pos)
                            dims.append(dim)
                    elif (f3, w3) == (2, 2):
                        dtype = str(view[v3[0]:v3[1]], "utf-8")
                    elif (f3, w3) == (3, 2):
                        content = view[v3[0]:v3[1]]
            else:
                raise _NotPlain(f"value field {f2}")
        if tag is None or dtype is None or content is None:
            raise _NotPlain("incomplete value")
        if entries and entries[-1][0] == tag:
            entries[-1][3].append(content)
        else:
            entries.append((tag, dims, dtype, [content]))
    out = {}
    for tag, dims, dtype, chunks in entries:
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if dtype == "str":
            out[tag] = str(np.frombuffer(data, f"U{len(data) // 4}")[0])
        elif dtype in _NP_TYPES:
            # aligned: the values sit at any byte offset of the file, and MindSpore 2.7 refuses unaligned arrays
            array = np.require(np.frombuffer(data, _NP_TYPES[dtype]), requirements="A")
            if array.size != int(np.prod(dims)):
                raise _NotPlain(f"{tag}: {array.size} values for dims {dims}")
            out[tag] = array.reshape(dims)
        else:
            raise _NotPlain(f"tensor type {dtype}")
    if not out:
        raise _NotPlain("no entries")
    return out


def _read_with_mindspore(path):
    import mindspore as ms

    try:
        raw = ms.load_checkpoint(path)
    except Exception as err:  # MindSpore raises ValueError/RuntimeError/... for damaged files
        raise UserError(f"{path}: not a readable MindSpore checkpoint ({first_line(err)})") from None
    return {name: value if isinstance(value, str) else value.asnumpy() for name, value in raw.items()}


def read_checkpoint(path):
    """Return ``(arrays, meta)``: parameter name -> numpy array, and the identity dict ({} if none).

    Plain checkpoints are parsed directly (several times faster than
    MindSpore's pure-Python protobuf parsing, and without importing
    MindSpore); encrypted or unusual files go through ``mindspore.load_checkpoint``.
    """
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise UserError(f"{path}: not a file")
    try:
        raw = _read_plain(path)
    except (_NotPlain, IndexError, UnicodeDecodeError, ValueError):
        raw = _read_with_mindspore(path)
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
            arrays[name] = value
    return arrays, meta


def _jsonable(value):
    """What ``json`` writes for a value it cannot: an object's own ``to_meta()`` (a block layout's
    versioned schema), else TypeError as ``json`` raises."""
    if hasattr(value, "to_meta"):
        return value.to_meta()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


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
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp.ckpt")  # matches TMP_FILE
    if isinstance(data, dict):
        data = [{"name": name, "data": ms.Tensor(np.ascontiguousarray(value))} for name, value in data.items()]
    append = {META_KEY: json.dumps(meta, sort_keys=True, default=_jsonable)} if meta else None
    try:
        with open(tmp, "wb"):  # fails here, quietly, if the folder is not writable
            pass
        ms.save_checkpoint(data, tmp, append_dict=append)
        os.replace(tmp, path)
    except (OSError, RuntimeError, ValueError) as err:
        raise UserError(f"{path}: cannot write checkpoint in {folder} ({first_line(err)})") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def shapes_of(net):
    """Parameter name -> shape of a Cell."""
    return {p.name: tuple(p.shape) for p in net.get_parameters()}


def mismatch(state, shapes, allow_extra=False):
    """What first keeps ``state`` (name -> array) from fitting ``shapes`` (name -> shape), or None.

    A parameter missing from ``state``, one of another shape, or (unless
    ``allow_extra``) an entry ``shapes`` does not know, as one phrase naming it.
    """
    for name, shape in shapes.items():
        if name not in state:
            return f"parameter '{name}' (expected shape {list(shape)}) is missing"
        found = tuple(state[name].shape)
        if found != tuple(shape):
            return f"parameter '{name}' has shape {list(found)}, expected {list(shape)}"
    extra = [] if allow_extra else [name for name in state if name not in shapes]
    if extra:
        return f"unexpected parameter '{extra[0]}' ({len(extra)} in all)"
    return None


# the names this module had before the package was laid out by role (acnet_ms/_moved.py)
__getattr__ = _moved_attr(__name__)
