"""Checkpoint files: read to numpy, write atomically, carry the model's identity.

A checkpoint written by acnet_ms holds the network's parameters and one
string entry, ``acnet_ms_meta``: a JSON object with the model's identity
(``model``, ``block_type``, ``num_classes``, ...).  MindSpore's loaders
report that entry as "not loaded" and otherwise ignore it.
"""
import json
import os
import re

import numpy as np

from ..reparam import state as state_map
from ..cli import UserError, first_line

META_KEY = "acnet_ms_meta"
#: the temporary file :func:`write_checkpoint` writes first: ``.<name>.<pid>.tmp.ckpt`` (group 1: the pid)
TMP_FILE = re.compile(r"^\..+\.(\d+)\.tmp\.ckpt$")


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
            array = np.frombuffer(data, _NP_TYPES[dtype])
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
    append = {META_KEY: json.dumps(meta, sort_keys=True)} if meta else None
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


def net_state(state, net, meta=None):
    """Adapt a checkpoint's arrays to ``net``'s block type, by the fold identities.

    Optimizer state is dropped.  A training-form checkpoint (re-parameterizable
    blocks) loaded into a plain model is folded (where the blocks' folds go: its
    metadata, or the block form of ``net``'s model); a plain checkpoint loaded
    into a model with blocks turns each conv + BN into a block that computes
    the same function (each kind's ``from_plain``, :func:`state.plain_to_blocks`).
    A checkpoint of a model's own blocks (MindCV's RepVGG, three branches)
    loaded into that model's deploy form has them folded too
    (:func:`acnet_ms.kinds.repvgg.state.fold_blocks`).
    """
    from ..kinds.repvgg import state as repvgg_state
    from ..models.factory import layout_for
    from ..reparam.record import record_of
    from ..reparam.transform import block_layout

    arrays = state_map.network_entries(state)
    mine = block_layout(net)
    record = record_of(net)
    if state_map.block_prefixes(arrays) and not mine:
        layout = layout_for(record.model, record.num_classes, meta or {}, state=arrays) if record.model else None
        if not layout:
            raise ValueError("a checkpoint with re-parameterizable blocks, but where their folds go is unknown "
                             "(no model recorded)")
        arrays, _ = state_map.fold_state(arrays, layout)
    elif mine:
        arrays = state_map.plain_to_blocks(arrays, mine)
    if record.native_blocks and repvgg_state.find(arrays):
        arrays, _ = repvgg_state.fold_blocks(arrays, record.native_blocks)
    return arrays


def load_pretrained(net, path, log=print, partial=False):
    """Finetuning start: load ``path`` into ``net``, strictly unless ``partial``.

    Strict: every parameter of ``net`` must come from the checkpoint by name and
    shape (a plain checkpoint fills a model's blocks by each kind's ``from_plain``:
    the parameters of a block's added branches that it leaves are kept as initialised
    when the block's own conv loaded); otherwise one UserError says how many matched
    and names the first that did not.  ``partial``: the classifier (the parameters
    whose first dimension is the model's class count) may differ or be missing, and
    keeps its initial values.  The log says what was loaded, what the block
    conversion set (branches started at zero to keep the pretrained function) and
    what was initialised.  Returns the names loaded.
    """
    import mindspore as ms

    from ..reparam.record import record_of
    from ..reparam.transform import block_layout

    arrays, meta = read_checkpoint(path)
    if meta.get("deploy"):
        raise UserError(f"{path}: a fully folded checkpoint (convert.py --fold_bn) has no BatchNorm left to "
                        f"train; start from the checkpoint it was converted from")
    try:
        state = net_state(arrays, net, meta)
    except ValueError as err:
        raise UserError(f"{path}: {err}") from None
    original = set(state_map.network_entries(arrays))
    blocks = tuple(prefix + "." for prefix in block_layout(net))
    params = list(net.get_parameters())
    num_classes = getattr(record_of(net), "num_classes", None)
    matched, problems = [], []
    for param in params:
        value = state.get(param.name)
        if value is None:
            problems.append((param, f"'{param.name}' is not in the checkpoint"))
        elif tuple(value.shape) != tuple(param.shape):
            problems.append((param, f"'{param.name}' has shape {list(value.shape)} in the checkpoint, "
                                    f"{list(param.shape)} in the model"))
        else:
            matched.append(param)
    loaded_blocks = {b for b in blocks for p in matched if p.name.startswith(b)}
    branch_init = {p.name for p, _ in problems if p.name.startswith(blocks) and state.get(p.name) is None
                   and any(p.name.startswith(b) for b in loaded_blocks)}
    head = {p.name for p, _ in problems if num_classes and p.shape and p.shape[0] == num_classes}
    failing = [(p, why) for p, why in problems if p.name not in branch_init and not (partial and p.name in head)]
    names = {p.name for p in params}
    unused = [name for name in state if name not in names]
    if unused and not partial:
        failing.append((None, f"'{unused[0]}' is in the checkpoint, not in the model ({len(unused)} such entries)"))
    model = getattr(record_of(net), "model", None) or type(net).__name__
    if failing or not matched:
        what = failing[0][1] if failing else "no parameter matches by name and shape"
        hint = ("; pass --ckpt_partial True to start the classifier afresh (another num_classes)"
                if failing and not partial and all(p is not None and p.name in head for p, _ in failing) else "")
        raise UserError(f"{path}: the checkpoint does not cover {model}: {len(matched)} of {len(params)} "
                        f"parameters match by name and shape; first that does not: {what}{hint}")
    for param in matched:
        param.set_data(ms.Tensor(state[param.name].astype(ms.dtype_to_nptype(param.dtype))))
    converted = [p.name for p in matched if p.name not in original]
    log(f"loaded {len(matched)} of {len(params)} parameters from {path}"
        + (f" ({len(converted)} of them set by the block conversion to keep the pretrained function: "
           f"branches started at zero, e.g. {converted[0]})" if converted else ""))
    if branch_init:
        log(f"kept as initialised, branches whose output the conversion switched off: {len(branch_init)} "
            f"({', '.join(sorted(branch_init)[:4])}{', ...' if len(branch_init) > 4 else ''})")
    started = [why for p, why in problems if p.name in head and p.name not in branch_init]
    if started:
        log("classifier initialised afresh (ckpt_partial): " + ", ".join(started))
    if unused:
        log(f"checkpoint entries the model does not have: {len(unused)} ({', '.join(unused[:3])}"
            f"{', ...' if len(unused) > 3 else ''})")
    return [p.name for p in matched]
