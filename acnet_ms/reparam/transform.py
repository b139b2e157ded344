"""Turn any network's convs into re-parameterizable blocks (or fold its BNs), learning its structure from the network itself.

:func:`trace` runs one forward pass in PyNative mode with hooks on every
leaf cell and records, for each ``nn.Conv2d``, which cells consume its
output; a conv whose output goes into one BatchNorm and nowhere else is that
BN's partner.  A second pass checks the "nowhere else": every partnered
conv's output is perturbed while its BN is fed the clean value; if the
network's output moves, a conv output leaks into something the hooks cannot
see (a functional op in ``construct``) and that conv loses its partner.  No
table of layer names is involved, so MindCV's ``conv1``/``bn1``,
``features.0``/``.1`` and ``conv.0``/``.1`` families are all found the same way.

:func:`plan_blocks` decides per conv, asking the block kind
(:mod:`acnet_ms.kinds`) which sites it takes and where each fold goes:

* output only into a BN (slot ``"bn"``): the block takes the conv's place and
  the BN's place becomes an identity (the fold writes its bias into that slot);
* its own bias and no BN after it (``"bias"``): the fold's bias goes into the
  conv's bias;
* no bias and no BN after it (``"none"``, pre-activation networks): the block
  folds to a bias-free kernel;
* a conv called more than once, or whose output also goes somewhere else,
  stays plain, as does any site the kind refuses, with the reason.

Only plain ``nn.Conv2d`` cells are taken: a subclass may compute otherwise
(MindCV's BiT standardises its weights in ``StdConv2d.construct``), so its
k x k convs stay plain, reported under their class's name.
"""
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .. import kinds
from ..kinds.cell import name_params, refresh_graph
from ..kinds.geometry import conv_like
from .forms import DEPLOY, STOCK, TRAINING, Forms
from .layout import Block, Layout
from .switch import reparam_blocks
from .record import BuildRecord, record_of, set_record


@dataclass
class ConvSite:
    """What one forward pass showed of a conv."""
    kernel: tuple
    has_bias: bool
    prefix: str = ""                  # its parameters' names less ".weight" (the checkpoint's names)
    calls: int = 0
    bn: Optional[str] = None          # the BatchNorm that alone consumes its output (cell path)
    bn_prefix: Optional[str] = None   # ... and its parameters' prefix
    bn_eps: float = 1e-5
    consumers: list = field(default_factory=list)
    feeds_bn: bool = False            # one of its consumers is a BatchNorm
    leaks: bool = False               # its output also reaches something no hook sees


def _is_conv(cell):
    from mindspore import nn
    return type(cell) is nn.Conv2d  # subclasses may compute otherwise (e.g. standardised weights)


def _is_bn(cell):
    from mindspore import nn
    return type(cell) is nn.BatchNorm2d and cell.gamma.requires_grad and cell.use_batch_statistics is None


def _not_taken(cell, what="blocks"):
    """Why a k x k conv of an ``nn.Conv2d`` subclass stays plain (its class named)."""
    from mindspore import nn

    kind = type(cell)
    differs = " whose construct differs" if kind.construct is not nn.Conv2d.construct else ""
    return f"{kind.__name__}, an nn.Conv2d subclass{differs}: {what} replace only plain nn.Conv2d"


def subclass_convs(net, what="blocks"):
    """``{cell path: reason}`` for the k x k convs (k > 1) of ``net`` that are ``nn.Conv2d`` subclasses."""
    from mindspore import nn

    return {name: _not_taken(cell, what) for name, cell in net.cells_and_names()
            if isinstance(cell, nn.Conv2d) and not _is_conv(cell) and tuple(cell.kernel_size) != (1, 1)}


def _leaves(net):
    return [(name, cell) for name, cell in net.cells_and_names() if name and not cell.name_cells()]


def _flat(out):
    if isinstance(out, (tuple, list)):
        return [a for o in out for a in _flat(o)]
    return [out.asnumpy().astype(np.float64)] if hasattr(out, "asnumpy") else []


def _run(net, x, hooks):
    handles = []
    try:
        for cell, kind, fn in hooks:
            handles.append(cell.register_forward_pre_hook(fn) if kind == "pre" else cell.register_forward_hook(fn))
        return _flat(net(x))
    finally:
        for h in handles:
            h.remove()


def trace(net, input_shape):
    """``{conv name: ConvSite}`` for every ``nn.Conv2d`` of ``net``, from forward passes on random data.

    Runs in PyNative mode (switched to and back), in eval mode (restored).
    """
    import mindspore as ms

    leaves = _leaves(net)
    convs = {name: cell for name, cell in leaves if _is_conv(cell)}
    sites = {name: ConvSite(tuple(cell.kernel_size), bool(cell.has_bias), cell.weight.name[:-len(".weight")])
             for name, cell in convs.items()}
    mode, training = ms.get_context("mode"), net.training
    ms.set_context(mode=ms.PYNATIVE_MODE)
    net.set_train(False)
    try:
        x = ms.Tensor(np.random.default_rng(0).normal(size=input_shape).astype(np.float32))
        outputs, inputs, calls = {}, [], {}

        def record_out(name):
            def hook(cell, args, out):
                outputs[name] = out
            return hook

        def record_in(name):
            def hook(cell, args):
                calls[name] = calls.get(name, 0) + 1
                inputs.append((name, args))
            return hook

        hooks = [(cell, "post", record_out(name)) for name, cell in convs.items()]
        hooks += [(cell, "pre", record_in(name)) for name, cell in leaves]
        reference = _run(net, x, hooks)
        owner = {id(out): name for name, out in outputs.items()}
        for consumer, args in inputs:
            for arg in args:
                if id(arg) in owner:
                    sites[owner[id(arg)]].consumers.append(consumer)
        cells = dict(leaves)
        for name, site in sites.items():
            site.calls = calls.get(name, 0)
            site.feeds_bn = any(_is_bn(cells[c]) for c in site.consumers)
            if site.calls == 1 and len(site.consumers) == 1:
                bn = site.consumers[0]
                if _is_bn(cells[bn]) and calls.get(bn) == 1:
                    site.bn, site.bn_eps = bn, float(cells[bn].eps)
                    site.bn_prefix = cells[bn].gamma.name[:-len(".gamma")]
        outputs.clear(), inputs.clear()
        paired = [name for name, site in sites.items() if site.bn]
        if paired and not _perturbation_keeps(net, x, reference, paired, sites, cells):
            for name in paired:  # find the culprits one by one (rare)
                if not _perturbation_keeps(net, x, reference, [name], sites, cells):
                    sites[name].leaks, sites[name].bn = True, None
    finally:
        net.set_train(training)
        ms.set_context(mode=mode)
    return sites


def _perturbation_keeps(net, x, reference, names, sites, cells):
    """True if perturbing these convs' outputs, while their BNs get the clean values, leaves the output."""
    clean = {}

    def perturb(name):
        def hook(cell, args, out):
            clean[name] = out
            return out + 1000.0
        return hook

    def feed(name):
        def hook(cell, args):
            return (clean[name],)
        return hook

    hooks = []
    for name in names:
        hooks += [(cells[name], "post", perturb(name)), (cells[sites[name].bn], "pre", feed(name))]
    out = _run(net, x, hooks)
    return len(out) == len(reference) and all(
        np.allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(b).max()))) for a, b in zip(out, reference))


def plan_blocks(sites, block_type, options):
    """``(blocks, plain)``: ``{conv: {"slot": "bn"|"bias"|"none", "bn": BN prefix or None, "bn_cell": ...,
    "prefix": ..., "kernel": (kh, kw)}}`` for the convs that become blocks of kind ``block_type`` (by cell
    path; ``prefix``: the names of their parameters), and ``{conv: reason}`` for the k x k convs (k > 1) that
    stay plain (and the 1 x 1 convs a kind gives a reason for)."""
    kind = kinds.get_kind(block_type)
    blocks, plain = {}, {}
    for name, site in sites.items():
        verdict = kind.eligible(site, options)
        if verdict is False:
            continue
        if verdict is not True:
            plain[name] = verdict
        elif site.calls != 1:
            plain[name] = "not used in a forward pass" if site.calls == 0 else f"called {site.calls} times"
        elif site.leaks or (site.feeds_bn and not site.bn):
            plain[name] = "its output feeds a BatchNorm and something else"
        else:
            slot = kind.slot(site, options)
            bn = slot == "bn"
            blocks[name] = dict(slot=slot, bn=site.bn_prefix if bn else None, bn_cell=site.bn if bn else None,
                                prefix=site.prefix, kernel=tuple(site.kernel))
    return blocks, plain


def _parent_and_key(net, name):
    parent = net
    head, _, key = name.rpartition(".")
    for part in head.split(".") if head else []:
        parent = parent.name_cells()[part]
    return parent, key


def replace_cell(net, name, new):
    """Put ``new`` where the cell called ``name`` sits (attribute or sequential slot)."""
    from mindspore import nn

    parent, key = _parent_and_key(net, name)
    if isinstance(parent, (nn.SequentialCell, nn.CellList)) and key in parent._cells:
        parent._cells[key] = new
        if isinstance(parent, nn.SequentialCell):
            parent.cell_list = list(parent._cells.values())
    else:
        setattr(parent, key, new)


def to_blocks(net, sites, block_type, options=None):
    """Turn ``net``'s eligible convs into blocks of kind ``block_type`` in place (see :func:`plan_blocks`;
    ``options``: the kind's, defaults filled in); returns ``net``.

    What became of each conv is kept in the network's record (``net.acnet``, :func:`block_summary`).
    """
    from mindspore import nn

    block_type, options = kinds.check_block(block_type, options)
    kind = kinds.get_kind(block_type)
    blocks, plain = plan_blocks(sites, block_type, options)
    plain.update(subclass_convs(net, kind.label + "s"))
    cells = dict(net.cells_and_names())
    for i, (name, slot) in enumerate(blocks.items()):
        after = slot["bn_cell"] or (sites[name].bn if kind.sees_bn_after else None)
        bn = cells[after] if after else None
        block = kind.build(cells[name], bn, slot["slot"], options, seed=i)
        replace_cell(net, name, block)
        name_params(block, slot["prefix"])
        if slot["slot"] == "bn":
            replace_cell(net, slot["bn_cell"], nn.Identity())
    refresh_graph(net)
    record = getattr(net, "acnet", None) or set_record(net, BuildRecord())
    record.block_type, record.block_options, record.blocks, record.plain = block_type, options, blocks, plain
    return net


def to_fused(net, sites):
    """The fully folded structure in place: every conv whose output goes only into a BN becomes a conv
    with bias, and that BN an identity.  Returns the ``[(conv, bn, eps), ...]`` pairs."""
    from mindspore import nn

    cells = dict(net.cells_and_names())
    pairs = []
    for name, site in sites.items():
        if not site.bn:
            continue
        conv = cells[name]
        if not conv.has_bias:
            fused = conv_like(conv, has_bias=True)
            replace_cell(net, name, fused)
            name_params(fused, site.prefix)
        replace_cell(net, site.bn, nn.Identity())
        pairs.append((site.prefix, site.bn_prefix, site.bn_eps))
    refresh_graph(net)
    return pairs


def block_layout(net):
    """The :class:`~acnet_ms.reparam.layout.Layout` of a network's re-parameterizable blocks in training
    form: each block's own ``reparam_info()`` plus where its fold goes (``slot``, ``bn``), as recorded by
    :func:`to_blocks`, under its parameter prefix."""
    blocks = record_of(net).blocks
    out = []
    for name, cell in reparam_blocks(net):
        if getattr(cell, "deploy", False):
            continue
        slot = blocks.get(name, dict(slot="none", bn=None, prefix=name))
        out.append(Block.from_info(slot["prefix"], dict(cell.reparam_info(), slot=slot["slot"], bn=slot["bn"])))
    return Layout(out)


def network_forms(net):
    """``(Forms, form)``: the :class:`~acnet_ms.reparam.forms.Forms` of a built network (its blocks, its own
    blocks, its deploy pairs, from its record) and the form it is in: ``training`` (blocks of a kind),
    ``deploy`` (built with ``deploy=True``) or ``stock``."""
    record = record_of(net)
    forms = Forms(block_layout(net), record.native_blocks, record.fused_pairs)
    form = TRAINING if forms.blocks else DEPLOY if (record.fused_pairs or record.native_blocks) else STOCK
    return forms, form


def native_blocks(net):
    """``[(cell path, cell), ...]``: the model's own re-parameterizable blocks still in training form (those
    of the native kinds, MindCV's RepVGG's)."""
    return [block for name in kinds.kind_names(native=True) for block in kinds.get_kind(name).model_blocks(net)]


def native_layout(net):
    """The :class:`~acnet_ms.reparam.layout.Layout` of the model's own training-form blocks (native kinds)."""
    layout = {}
    for name in kinds.kind_names(native=True):
        layout.update(kinds.get_kind(name).model_layout(net))
    return Layout.from_meta(layout)


def to_native_deploy(net):
    """The model's own blocks in their deploy form, in place (each native kind's ``to_deploy``); returns
    their :class:`~acnet_ms.reparam.layout.Layout` (empty for a model without any)."""
    layout = {}
    for name in kinds.kind_names(native=True):
        layout.update(kinds.get_kind(name).to_deploy(net))
    return Layout.from_meta(layout)


def block_summary(net):
    """How many k x k convs became blocks, where their folds go, which stayed plain and why (a dict)."""
    record = record_of(net)
    if record.block_type == kinds.BASE:
        return dict(block_type=kinds.BASE, blocks=0, acbs=0, kinds={}, plain={})
    counts = kinds.get_kind(record.block_type).slot_counts(record.blocks.values())
    n = len(record.blocks)
    return dict(block_type=record.block_type, blocks=n, acbs=n, kinds=counts, plain=dict(record.plain))


def summary_line(net):
    """One line for logs: ``16 k x k convs became ACBs (16 BN slot); stayed plain: 1 (kernel 7x7 ...)``."""
    summary = block_summary(net)
    if summary["block_type"] == kinds.BASE:
        return "no re-parameterizable block (block_type base)"
    line = kinds.get_kind(summary["block_type"]).summary_words(summary["blocks"], summary["kinds"])
    if summary["plain"]:
        reasons = {}
        for reason in summary["plain"].values():
            reasons[reason] = reasons.get(reason, 0) + 1
        line += "; stayed plain: " + ", ".join(f"{n} ({r})" for r, n in reasons.items())
    return line


#: the names these functions had when ACB was the only kind (``acnet_ms.acb_layout``, ``acb_summary``)
acb_layout, acb_summary = block_layout, block_summary
