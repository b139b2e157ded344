"""What a re-parameterizable block kind brings, and the table of kinds.

A *kind* (``block_type``) is everything the toolkit needs to know of one
family of training-time blocks, in one object:

* ``options``: its options, with defaults and checks (:class:`KindOption`);
  ``flat``: older flat config keys that set them (``acb_branches`` -> ``branches``);
* ``eligible(site, options)`` and ``slot(site, options)``: which traced conv
  sites it takes (or why one stays plain), and where the fold of each goes
  (``"bn"``: the BN slot after the conv, ``"bias"``: the conv's bias,
  ``"none"``: nowhere);
* ``build(conv, bn, slot, options, seed)``: its training-form Cell in place of a
  plain conv (+ BN); the Cell has ``switch_to_deploy()`` and ``reparam_info()``;
* the pure-numpy side, on checkpoint dicts (name -> array): ``marker`` (the
  entry suffix that shows a block), ``entries`` (its parameter names),
  ``fold`` (its entries -> one kernel + bias), ``from_plain`` (a plain conv's
  entries -> a block computing the same function, for finetuning),
  ``infer_options`` (the options its entries show);
* ``label`` and ``slot_words``: the words of the model's summary line.

:func:`register_kind` adds a kind; every module of the package looks kinds up
here by name and never names one.  Kinds in other packages register when
their module is imported: by your own code, through the ``acnet_ms.block_kinds``
entry-point group of an installed package, or by naming the module in the
environment variable ``ACNET_MS_KINDS`` (comma-separated; both are loaded on
the first lookup), so the command-line scripts find them too.

This module must not import MindSpore.
"""
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

#: the block type of plain models (not a kind: nothing to fold)
BASE = "base"

#: entry-point group through which installed packages add kinds
ENTRY_POINT_GROUP = "acnet_ms.block_kinds"

#: environment variable naming modules (comma-separated) that register kinds when imported
ENV_VAR = "ACNET_MS_KINDS"


@dataclass(frozen=True)
class KindOption:
    """One option of a kind: its default, the values it takes, what it means."""
    default: Any
    help: str
    choices: Optional[Tuple] = None
    parse: Optional[Callable] = None   # value -> value, ValueError for a bad one

    def check(self, name, value, kind):
        if self.parse is not None:
            try:
                value = self.parse(value)
            except (TypeError, ValueError) as err:
                raise ValueError(f"block option '{name}' of {kind}: {err}") from None
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"block option '{name}' of {kind} must be one of "
                             f"{', '.join(map(str, self.choices))}, got {value!r}")
        return value


def strict_bool(value):
    """A KindOption parser: True/False, or the strings "true"/"false" (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"expected True or False, got {value!r}")


def optional_number(value):
    """A KindOption parser: a number (as float) or None."""
    if value is None or isinstance(value, bool):
        if value is None:
            return None
        raise ValueError(f"expected a number or None, got {value!r}")
    return float(value)


def square_odd_kernel(site, why):
    """The common site rule: ``False`` for a 1 x 1 conv (never considered), the reason for a non-square
    or even kernel (``why``: what needs the odd k, in the reason's parentheses), else ``True``."""
    kh, kw = site.kernel
    if kh == 1 and kw == 1:
        return False
    if kh != kw:
        return f"non-square kernel {kh}x{kw}"
    if kh % 2 == 0:
        return f"kernel {kh}x{kh} ({why})"
    return True


class BlockKind:
    """The interface of a kind (see the module's docstring); subclass it and register an instance."""

    name = None            # the block_type value
    label = "block"        # what the summary line calls one block ("ACB")
    marker = None          # an entry-name suffix present once per block in a training checkpoint
    options = {}           # {option: KindOption}
    flat = {}              # {older flat config key: option}
    slot_words = {"bn": "BN slot", "bias": "conv bias", "none": "no BN"}

    # -------------------------------------------------------------- options

    def check_options(self, options=None):
        """``options`` with every default filled in and every value checked; ValueError naming the option."""
        options = dict(options or {})
        unknown = [k for k in options if k not in self.options]
        if unknown:
            import difflib

            named = []
            for key in unknown:  # every bad key at once
                close = difflib.get_close_matches(str(key), list(self.options), n=1)
                named.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
            listed = "" if all("did you mean" in n for n in named) else f" (options: {', '.join(self.options)})"
            raise ValueError(f"block_type {self.name} has no option{'s' if len(named) > 1 else ''} "
                             f"{', '.join(named)}{listed}")
        return {k: spec.check(k, options.get(k, spec.default), self.name) for k, spec in self.options.items()}

    def options_from_flat(self, mapping):
        """The kind's options that older flat keys of ``mapping`` set (keys absent or None are not set)."""
        return {opt: mapping[key] for key, opt in self.flat.items() if mapping.get(key) is not None}

    # -------------------------------------------------------------- models

    def eligible(self, site, options):
        """Whether the traced conv ``site`` (``transform.ConvSite``) is one this kind takes: ``True``;
        ``False`` for a conv it never considers (not reported, e.g. 1 x 1); else the reason it stays plain.
        Sites called more than once, or whose output leaks, stay plain whatever the kind says."""
        raise NotImplementedError

    def slot(self, site, options):
        """Where the fold of an eligible site goes: ``"bn"`` (the BN that alone follows the conv, unless
        the kind's ``branch_bn`` option is off), ``"bias"`` (the conv's own bias) or ``"none"`` (a
        bias-free kernel)."""
        if site.bn and options.get("branch_bn", True):
            return "bn"
        return "bias" if site.has_bias else "none"

    def build(self, conv, bn, slot, options, seed):
        """The training-form Cell that replaces ``conv`` (and ``bn``, for slot ``"bn"``), starting from
        their weights."""
        raise NotImplementedError

    # -------------------------------------------------------------- checkpoints (numpy)

    def entries(self, prefix, info):
        """The checkpoint names of the block at ``prefix`` (``info``: its layout entry)."""
        raise NotImplementedError

    def fold(self, state, prefix, info):
        """``(kernel, bias or None, consumed names)``: the block at ``prefix`` as one conv."""
        raise NotImplementedError

    def from_plain(self, state, prefix, info):
        """``state`` with the plain conv at ``prefix`` (and its BN slot) turned into this block's entries,
        computing the same function; unchanged where ``state`` has no such conv."""
        raise NotImplementedError

    def infer_options(self, state, prefixes):
        """``(options, unseen)``: the options the entries of the blocks at ``prefixes`` show, and the
        names of those they cannot show."""
        return {}, [k for k in self.options]

    def find(self, state):
        """The prefixes of the blocks of this kind in ``state``, in file order."""
        if not self.marker:
            return []
        return [name[:-len(self.marker)] for name in state if name.endswith(self.marker)]

    def slot_counts(self, slots):
        """``{"BN slot": 16, ...}``: how many blocks fold where, in the summary's words, for their slots
        (``"bn"``, ... or the blocks' record entries, ``{"slot": ..., "kernel": (kh, kw), ...}``)."""
        counts = {}
        for slot in slots:
            slot = slot["slot"] if isinstance(slot, dict) else slot
            word = self.slot_words.get(slot, slot)
            counts[word] = counts.get(word, 0) + 1
        return counts

    def summary_words(self, n, counts):
        """``"16 k x k convs became ACBs (16 BN slot)"`` for ``n`` blocks and their :meth:`slot_counts`."""
        kinds = ", ".join(f"{c} {w}" for w, c in counts.items())
        return f"{n} k x k convs became {self.label}s" + (f" ({kinds})" if kinds else "")


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


def _load_plugins():
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    import importlib
    import os
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        point.load()
    for module in filter(None, (m.strip() for m in os.environ.get(ENV_VAR, "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ValueError(f"{ENV_VAR}: cannot import block-kind module {module!r} ({err})") from None


def kind_names():
    """The registered kinds' names, in registration order."""
    _load_plugins()
    return list(_KINDS)


def block_types():
    """Every value ``block_type`` takes: ``base`` and the kinds."""
    return [BASE] + kind_names()


def get_kind(name):
    """The kind registered as ``name``; ValueError listing the block types otherwise."""
    _load_plugins()
    if name not in _KINDS:
        raise ValueError(f"block_type must be one of {', '.join(block_types())}, got {name!r}")
    return _KINDS[name]


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
    merged = kind.options_from_flat(flat or {})
    for key, value in dict(options or {}).items():
        if key in merged and merged[key] != value:
            old = next(k for k, o in kind.flat.items() if o == key)
            raise ValueError(f"block option '{key}' is {value!r} in block_options but {merged[key]!r} "
                             f"by '{old}'; set it once")
        merged[key] = value
    return block_type, kind.check_options(merged)

