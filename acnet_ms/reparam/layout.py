"""The layout of a network's re-parameterizable blocks, typed: which block sits at which parameter prefix,
its kind, where its fold goes, and what its kind's fold reads.

A :class:`Layout` maps each block's prefix to a :class:`Block`, in the network's order:

* ``kind``: the block kind's name (:mod:`acnet_ms.kinds`);
* ``slot``: where the folded bias goes: ``"bn"`` (into the BatchNorm ``bn`` that followed the conv in the
  plain model), ``"bias"`` (the conv's own bias) or ``"none"`` (nowhere: a bias-free kernel);
* ``options``: the kind's options the fold reads (the kind's ``layout_options``), defaulted by the kind;
* ``geometry``: what else the block reports of its site (kernel size, groups, channels, ``eps``,
  ``has_bias``, ...), the kind's ``layout_defaults`` filled in.

Checkpoint metadata stores :meth:`Layout.to_meta` under ``block_layout``:
``{"schema": 2, "blocks": [{"prefix", "kind", "slot", "bn", "options", "geometry"}, ...]}``.
:meth:`Layout.from_meta` reads that and schema 1, what every earlier version wrote (under ``block_layout``,
or ``acb_layout`` when ACB was the only kind): ``{prefix: {"kind", "slot", "bn", <fields>}}``, in JSON's
sorted key order; a schema newer than :data:`SCHEMA` is refused in one line.

A :class:`Block` is also a read-only mapping of its flat entry (``kind``, ``slot``, ``bn``, its options and
its geometry in one mapping): the ``info`` every kind's numpy methods (``entries``, ``fold``,
``from_plain``) receive, as when the layout was a dict.  Every function that takes a layout also takes
such a dict (:func:`as_layout`).

This module must not import MindSpore.
"""
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Optional

from .. import kinds
from ..kinds.identities import BN_EPS

#: the version of the layout schema this package writes (and the newest it reads)
SCHEMA = 2
#: where a block's folded bias can go
SLOTS = ("bn", "bias", "none")
_HEAD = ("kind", "slot", "bn")


def _kind(prefix, name):
    try:
        return kinds.get_kind(name)
    except ValueError:
        raise ValueError(f"block '{prefix}': unknown kind {name!r} (kinds: {', '.join(kinds.kind_names())}; "
                         f"a kind of another package loads from {kinds.table.ENV_VAR})") from None


@dataclass(frozen=True, eq=False)
class Block(Mapping):
    """One block of a :class:`Layout` (see the module's docstring); its fields are defaulted and checked on
    construction (:meth:`from_info` builds one from a flat entry).  It compares equal to a mapping of the
    same flat entry."""
    prefix: str
    kind: str
    slot: str
    bn: Optional[str]
    options: Mapping
    geometry: Mapping
    _flat: Mapping = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.slot not in SLOTS:
            raise ValueError(f"block '{self.prefix}': slot must be one of {', '.join(SLOTS)}, got {self.slot!r}")
        if self.slot == "bn" and not isinstance(self.bn, str):
            raise ValueError(f"block '{self.prefix}': slot 'bn' names no BatchNorm ('bn' is {self.bn!r})")
        kind = _kind(self.prefix, self.kind)
        options = dict(self.options)
        for name in kind.layout_options:
            options.setdefault(name, kind.options[name].default)
        geometry = dict(kind.layout_defaults, **self.geometry)
        object.__setattr__(self, "options", MappingProxyType(options))
        object.__setattr__(self, "geometry", MappingProxyType(geometry))
        flat = dict(geometry, **options)
        flat.update(kind=self.kind, slot=self.slot, bn=self.bn)
        object.__setattr__(self, "_flat", MappingProxyType(flat))

    @classmethod
    def from_info(cls, prefix, info):
        """The block at ``prefix`` from a flat entry (schema 1, a Cell's ``reparam_info()`` plus ``slot`` and
        ``bn``): the entries that are options of its kind become ``options``, the rest ``geometry``."""
        if not isinstance(info, Mapping):
            raise ValueError(f"block '{prefix}': a layout entry is a mapping, got {type(info).__name__}")
        if isinstance(info, Block):
            return info if info.prefix == prefix else cls(prefix, info.kind, info.slot, info.bn, info.options,
                                                          info.geometry)
        if "kind" not in info:
            raise ValueError(f"block '{prefix}': the layout entry names no kind")
        kind = _kind(prefix, info["kind"])
        rest = {k: v for k, v in info.items() if k not in _HEAD}
        options = {k: v for k, v in rest.items() if k in kind.options}
        geometry = {k: v for k, v in rest.items() if k not in kind.options}
        return cls(prefix, info["kind"], info.get("slot", "none"), info.get("bn"), options, geometry)

    @property
    def eps(self):
        """The epsilon of the BN the fold reads (of the BN slot, for slot ``"bn"``)."""
        eps = self.geometry.get("eps", BN_EPS)
        return eps if isinstance(eps, (int, float)) else BN_EPS

    def to_meta(self):
        """The JSON-able entry of schema :data:`SCHEMA`."""
        return dict(prefix=self.prefix, kind=self.kind, slot=self.slot, bn=self.bn, options=dict(self.options),
                    geometry=dict(self.geometry))

    # the flat entry, read-only (what the kinds' numpy methods read as ``info``)
    def __getitem__(self, key):
        return self._flat[key]

    def __iter__(self):
        return iter(self._flat)

    def __len__(self):
        return len(self._flat)


class Layout(Mapping):
    """``{prefix: Block}`` in the network's order, read-only (see the module's docstring)."""

    def __init__(self, blocks=()):
        self._blocks = {}
        for block in blocks:
            if block.prefix in self._blocks:
                raise ValueError(f"block '{block.prefix}' is twice in one layout")
            self._blocks[block.prefix] = block

    @classmethod
    def from_meta(cls, meta):
        """The layout that checkpoint metadata records (schema 2, or schema 1: see the module's docstring);
        ValueError naming what is wrong."""
        if isinstance(meta, Layout):
            return meta
        if not isinstance(meta, Mapping):
            raise ValueError(f"block_layout: expected a mapping, got {type(meta).__name__}")
        if "schema" not in meta:
            return cls(Block.from_info(prefix, info) for prefix, info in meta.items())
        schema = meta["schema"]
        if not isinstance(schema, int) or isinstance(schema, bool) or schema < 2:
            raise ValueError(f"block_layout: schema must be an integer from 2 to {SCHEMA}, got {schema!r}")
        if schema > SCHEMA:
            raise ValueError(f"block_layout: schema {schema} is newer than this acnet_ms reads ({SCHEMA}): "
                             f"upgrade acnet_ms to read this checkpoint")
        entries = meta.get("blocks")
        if not isinstance(entries, list):
            raise ValueError("block_layout: 'blocks' must be a list")
        return cls(_block_of(i, entry) for i, entry in enumerate(entries))

    def to_meta(self):
        """What checkpoint metadata stores (JSON-able; schema :data:`SCHEMA`)."""
        return dict(schema=SCHEMA, blocks=[block.to_meta() for block in self._blocks.values()])

    def __getitem__(self, prefix):
        return self._blocks[prefix]

    def __iter__(self):
        return iter(self._blocks)

    def __len__(self):
        return len(self._blocks)

    def __repr__(self):
        return f"Layout({len(self)} blocks: {', '.join(self._blocks)})"


def _block_of(index, entry):
    """The :class:`Block` of the ``index``-th entry of a schema-2 ``blocks`` list."""
    if not isinstance(entry, Mapping) or not isinstance(entry.get("prefix"), str):
        raise ValueError(f"block_layout: block {index} has no 'prefix'")
    prefix = entry["prefix"]
    unknown = sorted(set(entry) - {"prefix", "kind", "slot", "bn", "options", "geometry"})
    if unknown:
        raise ValueError(f"block '{prefix}': unknown layout key '{unknown[0]}'")
    if "kind" not in entry:
        raise ValueError(f"block '{prefix}': the layout entry names no kind")
    for key in ("options", "geometry"):
        if not isinstance(entry.get(key, {}), Mapping):
            raise ValueError(f"block '{prefix}': '{key}' must be a mapping")
    return Block(prefix, entry["kind"], entry.get("slot", "none"), entry.get("bn"), entry.get("options", {}),
                 entry.get("geometry", {}))


def as_layout(layout):
    """``layout`` as a :class:`Layout`: a Layout itself, checkpoint metadata of either schema, or a dict
    ``{prefix: flat entry}`` (what ``block_layout`` returned before the type)."""
    return layout if isinstance(layout, Layout) else Layout.from_meta(layout or {})
