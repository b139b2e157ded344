"""What a re-parameterizable block kind brings (the table of kinds is :mod:`.table`).

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
* ``label`` and ``slot_words``: the words of the model's summary line;
* ``macs(...)``: the forward multiply-adds of its training form against the plain conv's.

:class:`BranchBNKind` is what the kinds whose branches are convs each followed
by a BN share (their ``branch_bn`` and ``gamma_init`` options, the BN slot
moving into one branch in ``from_plain``, the ``build`` rule).

A *native* kind (:class:`NativeKind`, ``native = True``) is the re-parameterizable blocks a model
already has (MindCV's RepVGG): it is no ``block_type`` (it takes no plain
conv: its site rule says ``False`` everywhere), its blocks are found in the
plain model (``model_blocks``, ``model_layout``) and turned into their deploy
conv by ``to_deploy`` (``create_model(..., deploy=True)``), and on checkpoint
dicts it is found, checked and folded by the same code as every kind.

:func:`~.table.register_kind` adds a kind to the table (:mod:`.table`), where
every module of the package looks kinds up by name.

This module must not import MindSpore.
"""
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import numpy as np

from .._moved import moved_attr as _moved_attr
from ..cli import parse_bool
from .identities import BN_EPS, BN_FIELDS, bias_as_bn

#: the block type of plain models (not a kind: nothing to fold)
BASE = "base"


@dataclass(frozen=True)
class KindOption:
    """One option of a kind: its default, the values it takes, what it means."""
    default: Any
    help: str
    choices: Optional[Tuple] = None
    parse: Optional[Callable] = None   # value -> value, ValueError for a bad one
    examples: Tuple = ()               # values beside the choices worth a try (the contract tries each)

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


#: A KindOption parser for yes/no options: the package's one reading (:func:`acnet_ms.cli.parse_bool`, which
#: the command line and YAML use too: ``{branch_bn: 1}`` is ``--acb_branch_bn 1``)
strict_bool = parse_bool


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
    native = False         # True: a model's own blocks (see the module's docstring); never a block_type
    family = None          # the family of blocks it makes ("repvgg": 3x3 + 1x1 + identity); a model whose own
                           # blocks (a native kind's) are of its family refuses it: it would nest one in each
    sees_bn_after = False  # True: build() is given the BN that alone follows a site whatever the slot (for a
    #                        slot other than "bn" it stays the model's own); False: only for slot "bn"
    layout_options = ()    # the options a block's layout entry carries (its fold reads them; an older entry
    #                        without one gets the option's default: acnet_ms.reparam.layout)
    layout_defaults = {"has_bias": False}  # the geometry fields an older layout entry may lack, and their values

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
        their weights.  ``bn`` is None for other slots, unless :attr:`sees_bn_after` (then it is the BN that
        alone follows the conv, if any, and stays in the model)."""
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

    def check_complete(self, state, names, prefix):
        """ValueError naming the first of ``names`` that ``state`` lacks: the block at ``prefix`` is
        incomplete."""
        missing = next((name for name in names if name not in state), None)
        if missing is not None:
            raise ValueError(f"{self.label} '{prefix}' is incomplete: '{missing}' is missing")

    # -------------------------------------------------------------- cost

    def macs(self, in_channels, out_channels, kernel_size, options=None, stride=1, groups=1, height=56,
             width=None, padding=None, batch=1):
        """Multiply-adds of one forward pass of this kind's training form of a k x k conv, and of the plain
        conv it replaces, on ``batch`` images of ``height`` x ``width`` (``padding`` on every side; ``None``:
        k // 2), with the kind's ``options`` (defaults filled in).

        Returns ``{"plain", "block", "ratio", "branches": {part: multiply-adds}}``.  Convs count output
        elements x input channels per group x taps, pooling its adds; BNs, pads and sums (elementwise)
        are not counted.  The ratio is the training step's arithmetic floor (the backward costs about
        twice the forward in both)."""
        shape = ConvShape(in_channels, out_channels, kernel_size, stride, groups, height,
                          height if width is None else width, kernel_size // 2 if padding is None else padding, batch)
        branches = self.branch_macs(shape, self.check_options(options))
        block = sum(branches.values())
        return dict(plain=shape.plain, block=block, ratio=block / shape.plain, branches=branches)

    def branch_macs(self, shape, options):
        """``{part: multiply-adds}`` of the training form of the conv ``shape`` (a :class:`ConvShape`)."""
        raise NotImplementedError

    def folded_names(self, prefix, info):
        """``(kernel name, bias name)``: where the fold of the block at ``prefix`` goes when its slot is
        ``"bias"`` or ``"none"`` (the conv's own names; a native kind's deploy conv)."""
        return f"{prefix}.weight", f"{prefix}.bias"

    def missing(self, state, prefix, info):
        """The first of the block's entries ``state`` lacks, or None."""
        return next((n for n in self.entries(prefix, info) if n not in state), None)

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


class NativeKind(BlockKind):
    """The re-parameterizable blocks a model already has (MindCV's RepVGG; see the module's docstring): no
    ``block_type`` (no plain conv becomes one), found in the plain model and given their deploy conv there;
    on checkpoint dicts a kind like every other.  Subclass it for a model's own blocks."""

    native = True

    def eligible(self, site, options):
        return False  # the model's own blocks only: no plain conv becomes one

    def build(self, conv, bn, slot, options, seed):
        raise ValueError(f"{self.name} blocks are a model's own: they are not built in place of a conv")

    def model_blocks(self, net):
        """``[(cell path, cell), ...]``: ``net``'s own blocks of this kind still in training form."""
        raise NotImplementedError

    def model_layout(self, net):
        """``{parameter prefix: layout entry}`` of ``net``'s own training-form blocks."""
        raise NotImplementedError

    def to_deploy(self, net):
        """Turn ``net``'s own training-form blocks into their deploy conv, in place (freshly initialised:
        load a folded checkpoint into them); returns their layout."""
        raise NotImplementedError


@dataclass(frozen=True)
class ConvShape:
    """A k x k conv's shape, for counting multiply-adds (:meth:`BlockKind.macs`)."""
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    groups: int
    height: int
    width: int
    padding: int
    batch: int

    @property
    def out_pixels(self):
        """Output pixels of the k x k conv, the batch's."""
        k, s, p = self.kernel_size, self.stride, self.padding
        return self.batch * ((self.height + 2 * p - k) // s + 1) * ((self.width + 2 * p - k) // s + 1)

    @property
    def in_pixels(self):
        """Input pixels, the batch's."""
        return self.batch * self.height * self.width

    def conv(self, out_channels, in_channels, taps, at_input=False):
        """A conv in the block's groups: ``out_channels`` from ``in_channels`` with ``taps`` taps, on the k x k
        conv's output grid (``at_input``: on the input's, stride 1)."""
        pixels = self.in_pixels if at_input else self.out_pixels
        return pixels * out_channels * (in_channels // self.groups) * taps

    @property
    def plain(self):
        """The plain k x k conv's multiply-adds."""
        return self.conv(self.out_channels, self.in_channels, self.kernel_size ** 2)


#: the ``branch_bn`` option of the kinds whose branches end in BNs
BRANCH_BN = KindOption(True, "a BN per branch (False: no BN; the branches are summed, trained as one conv over "
                       "their summed kernel)", (True, False), strict_bool)


def gamma_init_option(help, examples=()):
    """The ``gamma_init`` option of a kind whose branches end in BNs (``help``: which BNs it starts)."""
    return KindOption(None, help, None, optional_number, tuple(examples))


class BranchBNKind(BlockKind):
    """A kind whose branches are convs each followed by a BN (option ``branch_bn``, and ``gamma_init``: see
    :data:`BRANCH_BN`, :func:`gamma_init_option`); at sites with neither a BN nor a bias after the conv,
    or with ``branch_bn`` off, its branches carry no BN and train as one conv.

    :meth:`BlockKind.slot` already keeps the BN after the conv where ``branch_bn`` is off.  A subclass
    names its Cell (:meth:`cell_class`, :meth:`cell_options`) and, for :meth:`from_plain`, the
    branch the plain conv becomes (``origin_conv``, ``origin_bn``: entry prefixes relative to the
    block), the BNs whose zero gamma and beta silence the other branches (:meth:`silent_bns`) and, for
    blocks without branch BNs, the kernels that start at zero (:meth:`zero_kernels`).
    """

    origin_conv = None
    origin_bn = None
    slot_words = {"bn": "BN slot", "bias": "conv bias", "none": "no BN (bias-free)"}
    layout_options = ("branch_bn",)
    layout_defaults = {"has_bias": False, "eps": BN_EPS}

    def cell_class(self):
        """The kind's Cell (imported here: this module must not import MindSpore)."""
        raise NotImplementedError

    def cell_options(self, options):
        """The Cell's ``from_conv`` arguments for the kind's ``options`` besides ``branch_bn`` and
        ``gamma_init``."""
        return {}

    def build(self, conv, bn, slot, options, seed):
        with_bn = options["branch_bn"] and slot != "none"
        return self.cell_class().from_conv(conv, bn if with_bn else None, branch_bn=with_bn,
                                           gamma_init=options["gamma_init"], seed=seed, **self.cell_options(options))

    # -------------------------------------------------------------- from_plain

    def origin_kernel(self, weight, info):
        """The origin branch's kernel in a block without branch BNs that computes the plain ``weight``."""
        return weight

    def zero_kernels(self, prefix, info, weight):
        """``{entry: shape}``: the kernels that start at zero in a block without branch BNs."""
        raise NotImplementedError

    def silent_bns(self, prefix, info):
        """The entry prefixes of the BNs whose gamma = beta = 0 make every branch but the origin add zero."""
        raise NotImplementedError

    @staticmethod
    def move_slot_bn(out, prefix, info, head):
        """In ``out`` (a checkpoint dict, changed in place), the plain conv's BN slot becomes the BN at entry
        prefix ``head``; for a conv with its own bias instead, a BN that adds it (the bias entry goes)."""
        if info["slot"] == "bn":
            for field in BN_FIELDS:
                if f"{info['bn']}.{field}" in out:
                    out[f"{head}.{field}"] = out.pop(f"{info['bn']}.{field}")
        elif f"{prefix}.bias" in out:
            for field, value in bias_as_bn(out.pop(f"{prefix}.bias"), info["eps"]).items():
                out[f"{head}.{field}"] = value

    def from_plain(self, state, prefix, info):
        """The plain conv becomes the origin branch (its BN slot that branch's BN, a bias a BN that adds it);
        every other branch adds exactly zero until training moves it: its last BN's gamma = beta = 0, or,
        without branch BNs, the kernels that end it are zero."""
        out = dict(state)
        if f"{prefix}.weight" not in state:
            return out
        weight = out.pop(f"{prefix}.weight")
        conv, norm = f"{prefix}.{self.origin_conv}", f"{prefix}.{self.origin_bn}"
        if not info["branch_bn"]:
            out[f"{conv}.weight"] = self.origin_kernel(weight, info)
            if f"{prefix}.bias" in out:
                out[f"{conv}.bias"] = out.pop(f"{prefix}.bias")
            for name, shape in self.zero_kernels(prefix, info, weight).items():
                out[name] = np.zeros(shape, weight.dtype)
            return out
        out[f"{conv}.weight"] = weight
        self.move_slot_bn(out, prefix, info, norm)
        zeros = np.zeros(np.shape(weight)[0], weight.dtype)
        for head in self.silent_bns(prefix, info):
            out[f"{head}.gamma"] = zeros
            out[f"{head}.beta"] = zeros
        return out


__getattr__ = _moved_attr(__name__)  # the table moved to .table (0.2.0)
