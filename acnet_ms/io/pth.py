"""PyTorch ``.pth`` files read to numpy, without torch and without running pickled code.

A ``.pth`` is a pickle.  Unpickling one with :mod:`pickle` (or ``torch.load``
without ``weights_only``) can run any function the file names; this reader
resolves only the globals that tensors, parameters and ordered dicts need, and
to functions of its own, never to torch's:

* ``collections.OrderedDict``;
* ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_tensor`` / ``_rebuild_parameter`` /
  ``_rebuild_parameter_with_state`` (here: build a numpy array from a storage, an offset, a
  size and strides);
* the typed storages ``torch.FloatStorage``, ``HalfStorage``, ``BFloat16Storage``,
  ``DoubleStorage``, ``ByteStorage``, ``CharStorage``, ``ShortStorage``, ``IntStorage``,
  ``LongStorage``, ``BoolStorage`` (here: markers carrying a numpy dtype);
* numpy's scalar and dtype reconstructors (``numpy.core.multiarray.scalar``,
  ``numpy.dtype``), which some training scripts leave in a checkpoint (a best accuracy).

Any other global (``os.system``, ``builtins.eval``, an ``argparse.Namespace``, a model class) is
refused in one line naming it, before anything is called.

Both layouts ``torch.save`` writes are read: the zip archive (``<archive>/data.pkl`` with one
file per storage under ``<archive>/data/``, and ``<archive>/byteorder``) and the legacy one
(``_use_new_zipfile_serialization=False``: a magic number, the protocol, system information, the
pickled object, the list of storage keys, then each storage as an 8-byte element count and its
raw bytes).  Views (a storage offset and strides) and storages shared between tensors come out
as the arrays the tensors are.  ``bfloat16`` (which numpy lacks) becomes float32 exactly; every
other dtype keeps its own.

This module must not import MindSpore or torch.
"""
import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

#: storage class name -> (numpy dtype of the bytes, element size)
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "ByteStorage": np.uint8, "CharStorage": np.int8,
    "ShortStorage": np.int16, "IntStorage": np.int32, "LongStorage": np.int64, "BoolStorage": np.bool_,
}

#: the legacy layout's magic number and protocol version
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


class PthError(ValueError):
    """A ``.pth`` this reader refuses or cannot read; its message is one line."""


class _StorageType:
    """What ``torch.<X>Storage`` resolves to: the storage's element type."""

    def __init__(self, name):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]

    @property
    def itemsize(self):
        return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize

    def __repr__(self):
        return f"torch.{self.name}"


def _decode(raw, dtype, byteorder="little"):
    """Bytes of a storage as a 1-D numpy array (bfloat16 widened to float32 exactly)."""
    order = "<" if byteorder == "little" else ">"
    if dtype == "bfloat16":
        half = np.frombuffer(raw, np.dtype(f"{order}u2"))
        return (half.astype(np.uint32) << 16).view(np.float32)
    dt = np.dtype(dtype)
    if dt.itemsize > 1:
        dt = dt.newbyteorder(order)
    # aligned: a storage sits at any byte offset of the archive, and MindSpore 2.7 refuses unaligned arrays
    return np.require(np.frombuffer(raw, dt).astype(dt.newbyteorder("="), copy=False), requirements="A")


class _Storage:
    """One storage: its element type and, once read, its elements as a 1-D array."""

    def __init__(self, kind, array):
        self.kind = kind
        self.array = array


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    """The array a tensor is: ``size`` elements of ``storage`` from ``storage_offset`` with ``stride``."""
    if not isinstance(storage, _Storage):
        raise PthError(f"a tensor whose storage is {type(storage).__name__}, not a storage")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    base = storage.array
    if len(size) != len(stride):
        raise PthError(f"a tensor of size {list(size)} with strides {list(stride)}")
    if any(s == 0 for s in size):
        return np.zeros(size, base.dtype)
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
    if storage_offset < 0 or min(stride, default=0) < 0 or last >= base.size:
        raise PthError(f"a tensor of size {list(size)}, strides {list(stride)} and offset {storage_offset} "
                       f"reaches past its storage of {base.size} elements")
    item = base.itemsize
    view = np.lib.stride_tricks.as_strided(base[storage_offset:], shape=size,
                                           strides=tuple(s * item for s in stride), writeable=False)
    return np.array(view)


def _rebuild_parameter(data, *_ignored):
    return data


def _numpy_scalar(dtype, raw=None):
    return np.frombuffer(raw, dtype)[0] if raw is not None else dtype.type()


#: (module, name) -> what the global resolves to; everything else is refused
_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): np.dtype,
}
#: the tensor builders, deferred in the legacy layout
_TENSOR_BUILDERS = (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor"))
_ALLOWED.update({("torch", name): _StorageType(name) for name in STORAGE_DTYPES})


class _Unpickler(pickle.Unpickler):
    """A pickle reader that resolves only :data:`_ALLOWED` and reads storages through ``load_storage``."""

    def __init__(self, file, load_storage, deferred=False):
        super().__init__(file)
        self._load_storage = load_storage
        self._deferred = deferred

    def find_class(self, module, name):
        if self._deferred and (module, name) in _TENSOR_BUILDERS:
            return _Pending
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise PthError(f"refused the global '{module}.{name}': a .pth may hold only tensors, numbers, "
                           f"strings and containers (nothing in the file was run)") from None

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise PthError(f"unknown persistent id {str(pid)[:60]!r}")
        return self._load_storage(pid)


def _check_kind(kind):
    if not isinstance(kind, _StorageType):
        raise PthError(f"a storage of type {kind!r}, not a typed torch storage")
    return kind


def _load_zip(path, archive):
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
        raise PthError("a zip archive without exactly one data.pkl: not a torch.save file")
    root = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if f"{root}byteorder" in names:
        byteorder = archive.read(f"{root}byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise PthError(f"unknown byte order {byteorder!r}")
    storages = {}

    def load_storage(pid):
        if len(pid) < 5:
            raise PthError(f"a storage record of {len(pid)} fields")
        _, kind, key, _location, _numel = pid[:5]
        kind = _check_kind(kind)
        if key not in storages:
            member = f"{root}data/{key}"
            if member not in names:
                raise PthError(f"storage '{key}' is missing from the archive")
            raw = archive.read(member)
            if len(raw) % kind.itemsize:
                raise PthError(f"storage '{key}' holds {len(raw)} bytes, not whole {kind!r} elements")
            storages[key] = _Storage(kind, _decode(raw, kind.dtype, byteorder))
        return storages[key]

    return _Unpickler(io.BytesIO(archive.read(pickles[0])), load_storage).load()


def _load_legacy(handle):
    def plain(what):
        try:
            return _Unpickler(handle, _no_storage).load()
        except (EOFError, pickle.UnpicklingError) as err:
            raise PthError(f"not a torch.save file ({what}: {err})") from None

    magic = plain("magic number")
    if magic != LEGACY_MAGIC:
        raise PthError("not a torch.save file (no zip archive and no legacy magic number)")
    protocol = plain("protocol")
    if protocol != LEGACY_PROTOCOL:
        raise PthError(f"legacy protocol {protocol!r}, expected {LEGACY_PROTOCOL}")
    info = plain("system information")
    little = not isinstance(info, dict) or info.get("little_endian", True)
    records = {}

    def load_storage(pid):
        if len(pid) < 6:
            raise PthError(f"a legacy storage record of {len(pid)} fields")
        _, kind, key, _location, _numel, view = pid[:6]
        kind = _check_kind(kind)
        if key not in records:
            records[key] = _Storage(kind, None)
        if view is None:
            return records[key]
        view_key, offset, view_size = view
        return ("view", records[key], int(offset), int(view_size), view_key)

    # the legacy layout's storages come after the pickle: tensors are built once they are read
    result = _Unpickler(handle, load_storage, deferred=True).load()
    keys = plain("storage keys")
    for key in keys:
        head = handle.read(8)
        if len(head) != 8:
            raise PthError(f"the file ends before storage '{key}'")
        (count,) = struct.unpack("<q" if little else ">q", head)
        record = records.get(key)
        if record is None:
            raise PthError(f"storage '{key}' is listed but no tensor uses it")
        raw = handle.read(count * record.kind.itemsize)
        if len(raw) != count * record.kind.itemsize:
            raise PthError(f"the file ends inside storage '{key}'")
        record.array = _decode(raw, record.kind.dtype, "little" if little else "big")
    missing = [k for k, r in records.items() if r.array is None]
    if missing:
        raise PthError(f"storage '{missing[0]}' is used but not in the file")
    return _resolve_legacy(result)


def _no_storage(pid):
    raise PthError("a storage outside the pickled object")


class _Pending:
    """A legacy tensor whose storage's bytes come after the pickle: built once they are read."""

    def __init__(self, *args):
        self.args = args


def _resolve_legacy(obj):
    """Replace every pending legacy tensor in ``obj`` (dicts, lists, tuples) by its array."""
    if isinstance(obj, _Pending):
        storage, offset, *rest = obj.args
        if isinstance(storage, tuple) and storage and storage[0] == "view":
            _, base, view_offset, view_size, _ = storage
            storage = _Storage(base.kind, base.array[view_offset:view_offset + view_size])
        return _rebuild_tensor(storage, offset, *rest)
    if isinstance(obj, dict):
        for key in list(obj):
            obj[key] = _resolve_legacy(obj[key])
        return obj
    if isinstance(obj, list):
        return [_resolve_legacy(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve_legacy(v) for v in obj)
    return obj


def _check_complete(path):
    """A file that starts as a zip archive (torch.save's format) but lacks the record a zip ends with was cut
    short (a download or a copy): say so, instead of reading its bytes as a legacy pickle."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        raise PthError(f"truncated or incomplete: it starts as a zip archive (torch.save's format) but has no "
                       f"end-of-archive record ({os.path.getsize(path)} bytes); was its download or copy cut short?")


def load(path):
    """The object a ``.pth`` holds, tensors as numpy arrays.  Raises :class:`PthError` (one line)."""
    if not os.path.isfile(path):
        raise PthError("no such file")
    _check_complete(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return _load_zip(path, archive)
        with open(path, "rb") as handle:
            return _load_legacy(handle)
    except PthError:
        raise
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, struct.error, ValueError, TypeError,
            IndexError, AttributeError, KeyError, OverflowError, MemoryError) as err:
        raise PthError(f"cannot read ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None


#: where training scripts nest the state dict inside a checkpoint, tried in order
NESTED_KEYS = ("state_dict", "model", "model_state_dict", "net", "network", "module")


def state_dict(obj):
    """The flat ``name -> array`` state dict in what :func:`load` returned.

    A checkpoint dict holding the weights under ``state_dict``/``model``/... (training scripts'
    ``{'epoch': ..., 'state_dict': ...}``) is unwrapped; the ``module.`` prefix that DataParallel
    adds is dropped from every name that has it.  Raises :class:`PthError` if no state dict is found.
    """
    for _ in range(4):  # a nested state dict wins over the checkpoint's own tensors (a best accuracy)
        inner = next((obj[k] for k in NESTED_KEYS if isinstance(obj, dict) and isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not _is_state(obj):
        keys = ", ".join(map(str, list(obj)[:5])) if isinstance(obj, dict) else type(obj).__name__
        raise PthError(f"no state dict (name -> tensor) found; the file holds {keys or 'an empty dict'}")
    out = {}
    for name, value in obj.items():
        if not isinstance(value, np.ndarray):
            continue
        name = str(name)
        if name.startswith("module."):
            name = name[len("module."):]
        out[name] = value
    return out


def _is_state(obj):
    return bool(obj) and all(isinstance(k, str) for k in obj) and \
        any(isinstance(v, np.ndarray) for v in obj.values())


def read_pth(path):
    """``name -> numpy array`` of the state dict in the ``.pth`` at ``path`` (:func:`load` + :func:`state_dict`)."""
    return state_dict(load(path))
