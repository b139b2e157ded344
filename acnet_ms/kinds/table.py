"""The table of block kinds: registration, lookup by name, and the loading of kinds from other packages.

:func:`register_kind` adds a kind; every module of the package looks kinds up
here by name and never names one.  Kinds in other packages register when
their module is imported: by your own code, through the ``acnet_ms.block_kinds``
entry-point group of an installed package, or by naming the module in the
environment variable ``ACNET_MS_KINDS`` (comma-separated; both are loaded on
the first lookup), so the command-line scripts find them too.

This module must not import MindSpore.
"""
from ..cli import UserError, first_line
from .base import BASE, BlockKind

#: entry-point group through which installed packages add kinds
ENTRY_POINT_GROUP = "acnet_ms.block_kinds"

#: environment variable naming modules (comma-separated) that register kinds when imported
ENV_VAR = "ACNET_MS_KINDS"

_KINDS = {}
_PLUGINS_LOADED = False


def register_kind(kind):
    """Add ``kind`` (a :class:`BlockKind` instance) to the table under ``kind.name``; returns it."""
    if not isinstance(kind, BlockKind) or not kind.name or not isinstance(kind.name, str):
        raise ValueError("register_kind takes a BlockKind instance with a name")
    if kind.name == BASE:
        raise ValueError(f"'{BASE}' is the plain block type, not a kind")
    _KINDS[kind.name] = kind
    return kind


def unregister_kind(name):
    """Remove a kind from the table (tests and interactive sessions)."""
    _KINDS.pop(name, None)


class KindImportError(UserError):
    """A block-kind module named by ``ACNET_MS_KINDS`` (or an entry point) that does not import: one line
    (``error: ACNET_MS_KINDS: cannot import ...``, exit 2) from every entry point."""


def _why(err):
    """``No module named 'x'``, or the error's type and first line for anything else a module raises."""
    text = first_line(err)
    return text if isinstance(err, ImportError) else f"{type(err).__name__}: {text}"


def _load_plugins():
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True  # first: a kind module may look kinds up while it registers
    try:
        _import_plugins()
    except KindImportError:
        _PLUGINS_LOADED = False  # every lookup says it again
        raise


def kind_entry_points():
    """The entry points of :data:`ENTRY_POINT_GROUP` (Python 3.9's ``entry_points()`` takes no ``group`` and
    returns a dict of groups; 3.10's selects)."""
    from importlib.metadata import entry_points

    points = entry_points()
    if hasattr(points, "select"):
        return list(points.select(group=ENTRY_POINT_GROUP))
    return list(points.get(ENTRY_POINT_GROUP, ()))


def _import_plugins():
    import importlib
    import os

    for point in kind_entry_points():
        try:
            point.load()
        except Exception as err:  # noqa: BLE001  (whatever the module raises on import: one line)
            raise KindImportError(f"entry point {point.name!r} ({ENTRY_POINT_GROUP}): cannot import block-kind "
                                  f"module {point.value!r} ({_why(err)})") from None
    for module in filter(None, (m.strip() for m in os.environ.get(ENV_VAR, "").split(","))):
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001
            raise KindImportError(f"{ENV_VAR}: cannot import block-kind module {module!r} ({_why(err)})") from None


def load_kinds():
    """Import the block-kind modules named by entry points and ``ACNET_MS_KINDS`` now (they load on the first
    lookup otherwise): the entry points call it first, so a module that does not import is their one line."""
    _load_plugins()


def registered_kinds():
    """The kinds registered so far, without loading other packages' kinds (what the option table reads at
    import: a kind module that does not import must not stop the package from importing)."""
    return list(_KINDS.values())


def kind_names(native=False):
    """The registered kinds' names, in registration order: the block types' (``native=True``: the kinds
    that are models' own blocks, which are no block type, instead)."""
    _load_plugins()
    return [name for name, kind in _KINDS.items() if bool(kind.native) == bool(native)]


def block_types():
    """Every value ``block_type`` takes: ``base`` and the kinds."""
    return [BASE] + kind_names()


def get_kind(name):
    """The kind registered as ``name``; ValueError listing the block types otherwise."""
    _load_plugins()
    if name not in _KINDS:
        raise ValueError(f"block_type must be one of {', '.join(block_types())}, got {name!r}")
    return _KINDS[name]


def check_recorded_kind(block_type, where):
    """UserError when the checkpoint ``where`` records a ``block_type`` that no loaded kind provides: the
    module that registers it was not loaded (``ACNET_MS_KINDS``)."""
    if block_type in (None, BASE):
        return
    _load_plugins()
    if block_type not in _KINDS:
        raise UserError(f"{where} records block_type {block_type!r}, which no loaded kind provides (kinds: "
                        f"{', '.join(kind_names())}): name the module that registers it in {ENV_VAR} "
                        f"({ENV_VAR}=my_kinds python ...; docs/models.md, 'Adding a kind')")


def check_block(block_type, options=None, flat=None):
    """``(block_type, options)`` checked, the kind's defaults filled in.

    ``flat``: a mapping that may hold older flat keys (``acb_branches``, ...);
    what they set is taken unless ``options`` sets the same option otherwise
    (ValueError).  For ``base``, options must be empty (flat keys are ignored).
    """
    if block_type == BASE:
        if options:
            raise ValueError(f"block_options {dict(options)} given for block_type {BASE}, which has none")
        return BASE, {}
    kind = get_kind(block_type)
    if kind.native:
        raise ValueError(f"block_type must be one of {', '.join(block_types())}, got {block_type!r} (the blocks "
                         f"{kind.name} names are a model's own, not a block type for other models)")
    merged = kind.options_from_flat(flat or {})
    for key, value in dict(options or {}).items():
        if key in merged and merged[key] != value:
            old = next(k for k, o in kind.flat.items() if o == key)
            raise ValueError(f"block option '{key}' is {value!r} in block_options but {merged[key]!r} "
                             f"by '{old}'; set it once")
        merged[key] = value
    return block_type, kind.check_options(merged)

