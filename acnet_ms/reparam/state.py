"""Checkpoint dicts (name -> numpy array): which entries fold into which.

The arithmetic is :mod:`acnet_ms.kinds.identities`; this module only maps names.  What
goes where comes from a *layout* (:class:`acnet_ms.reparam.layout.Layout`; every function here
also takes the dict ``{prefix: flat entry}`` of earlier versions), which the model
reports for itself (``acnet_ms.reparam.transform.block_layout``) and training
checkpoints record in their metadata: a block's ``kind`` names the block kind
(:mod:`acnet_ms.kinds`) whose ``fold`` turns the block's entries into one
kernel and bias, its ``slot`` says where that bias goes:

* ``"bn"``: into the BatchNorm ``bn`` that followed the conv in the
  plain model (identity statistics, :func:`identities.bias_as_bn`);
* ``"bias"``: into the conv's own bias ``X.bias``;
* ``"none"``: nowhere (a block without BN and bias folds to a bare kernel; a
  BatchNorm after it, if any, is the model's own and stays).

This module must not import MindSpore.
"""
import numpy as np

from ..kinds import identities
from .. import kinds
from .layout import as_layout

#: scalars that MindSpore's optimizers and trainers (ours and MindCV's) keep beside the network's parameters
TRAINER_SCALARS = frozenset({
    "learning_rate", "global_step", "momentum", "weight_decay", "beta1_power", "beta2_power", "mu_schedule",
    "scale_sense", "loss_scale", "current_iterator_step", "last_overflow_iterator_step",
    "epoch_num", "step_num", "accum.micro_step", "ema.updates",
})


def _is_copy(name, state):
    """``<slot>.<entry>`` holding one value per value of another entry of ``state``: an optimizer slot
    (``moments.``, ``stat.``, ``mean_square.``, ``adam_m.``, ...) or an EMA copy.  A numeric head is a
    SequentialCell index (``1.0.weight``), which is the network's own."""
    head, dot, rest = name.partition(".")
    if not dot or head.isdigit() or rest not in state:
        return False
    return np.shape(state[name]) == np.shape(state[rest])


def trainer_entries(state, network=None):
    """The names of ``state``'s entries that belong to the optimizer or the trainer, not the network.

    ``network``: the model's own parameter names (in the checkpoint's form);
    every other entry is then trainer state.  Without it the checkpoint
    tells by itself: an optimizer keeps one slot per parameter under the
    parameter's own name behind a prefix, whatever the optimizer, so an
    entry that is another entry's copy under a prefix is a slot; and the
    trainers' scalars (:data:`TRAINER_SCALARS`).
    """
    if network is not None:
        network = set(network)
        return {name for name in state if name not in network}
    return {name for name in state if name in TRAINER_SCALARS or _is_copy(name, state)}


def network_entries(state, network=None):
    """``state`` without its optimizer and trainer entries (see :func:`trainer_entries`), in file order."""
    trainer = trainer_entries(state, network)
    return {name: value for name, value in state.items() if name not in trainer}


def find_blocks(state, native=False):
    """``{prefix: kind name}`` of the re-parameterizable blocks of every kind in ``state``, in file order
    (each kind recognises its own by an entry suffix); optimizer slots and EMA copies are not blocks.
    ``native``: the blocks of the native kinds (a model's own blocks, MindCV's RepVGG's) instead."""
    found = {}
    for kind in map(kinds.get_kind, kinds.kind_names(native=native)):
        markers = {p + kind.marker: p for p in kind.find(state)}
        copies = trainer_entries({m: state[m] for m in markers})
        found.update({prefix: (marker, kind.name) for marker, prefix in markers.items() if marker not in copies})
    order = {name: i for i, name in enumerate(state)}
    return {p: k for p, (m, k) in sorted(found.items(), key=lambda item: order[item[1][0]])}


def block_prefixes(state):
    """The names of the blocks in a checkpoint dict (see :func:`find_blocks`), in file order."""
    return list(find_blocks(state))


def infer_block(state):
    """``(block_type, shown options, unseen option names)`` of a checkpoint that records nothing: the
    kind whose blocks ``state`` holds and the options their entries show; ``("base", {}, [])`` without
    blocks; ValueError for blocks of several kinds."""
    found = find_blocks(state)
    names = sorted(set(found.values()))
    if not names:
        return kinds.BASE, {}, []
    if len(names) > 1:
        raise ValueError(f"blocks of several kinds ({', '.join(names)}) in one checkpoint")
    shown, unseen = kinds.get_kind(names[0]).infer_options(state, list(found))
    return names[0], shown, unseen


def training_names(plain_names, layout):
    """The parameter names of a model's training form, from its plain form's names and its layout."""
    consumed, added = set(), []
    for prefix, block in as_layout(layout).items():
        consumed.update({prefix + ".weight", prefix + ".bias"})
        if block.slot == "bn":
            consumed.update(f"{block.bn}.{f}" for f in identities.BN_FIELDS)
        added += kinds.get_kind(block.kind).entries(prefix, block)
    return [n for n in plain_names if n not in consumed] + added


def fold_state(state, layout, network=None):
    """Fold every re-parameterizable block of a training-form checkpoint into plain-model entries.

    ``state`` maps parameter names to numpy arrays; ``layout`` says where each
    block is and what it is (see the module's docstring).  A block ``X`` becomes
    ``X.weight`` and its bias goes where its ``slot`` says.  Optimizer and trainer
    entries are dropped (``network``: the model's own names in training
    form, see :func:`trainer_entries`); every other entry is copied unchanged.

    Returns ``(new_state, block_names)``; ValueError on an incomplete block, a
    block the layout does not know, or a folded entry that would overwrite one
    already in ``state``.
    """
    layout = as_layout(layout)
    state = network_entries(state, network)
    unknown = [p for p in block_prefixes(state) if p not in layout]
    if unknown:
        raise ValueError(f"block '{unknown[0]}' is not part of this model")
    consumed, folded = set(), {}
    for prefix, block in layout.items():
        kind = kinds.get_kind(block.kind)
        kernel, bias, names = kind.fold(state, prefix, block)
        weight_name, bias_name = kind.folded_names(prefix, block)
        consumed.update(names)
        folded[weight_name] = kernel
        if block.slot == "bn":
            for field, value in identities.bias_as_bn(bias, block.eps).items():
                folded[f"{block.bn}.{field}"] = value
        elif bias is not None:
            folded[bias_name] = bias
    out = {name: value for name, value in state.items() if name not in consumed}
    clash = sorted(set(out) & set(folded))
    if clash:
        raise ValueError(f"'{clash[0]}' is both stored in the checkpoint and produced by folding a block")
    out.update(folded)
    return out, list(layout)


def check_blocks(state, layout):
    """ValueError naming the first block of ``layout`` whose entries ``state`` lacks, and the entry."""
    for prefix, block in as_layout(layout).items():
        kind = kinds.get_kind(block.kind)
        kind.check_complete(state, kind.entries(prefix, block), prefix)


def plain_to_blocks(state, layout):
    """Map a plain checkpoint onto a model's blocks so that they compute the plain function (each
    kind's ``from_plain``); blocks without a plain conv in ``state`` are left alone."""
    out = dict(state)
    for prefix, block in as_layout(layout).items():
        out = kinds.get_kind(block.kind).from_plain(out, prefix, block)
    return out


def fold_bns(state, pairs):
    """Fold the BatchNorms of a plain checkpoint into the convs before them, as those convs' biases.

    ``pairs`` lists ``(conv, bn)`` or ``(conv, bn, eps)`` (the model's own: ``transform.trace``).
    The conv ``X`` gets the folded kernel ``X.weight`` and a bias ``X.bias`` (a
    bias the conv already has is folded in too); the entries ``Y.gamma``,
    ``Y.beta``, ``Y.moving_mean``, ``Y.moving_variance`` go.  BatchNorms that
    follow no conv (pre-activation) stay.  Optimizer and trainer entries are
    dropped; every other entry is copied, in the checkpoint's order (the bias
    right after its kernel).

    Returns ``(new_state, pairs)``; ValueError when a pair is incomplete,
    folded twice, or its BN does not match its conv's output channels.
    """
    state = network_entries(state)
    folded, dropped = {}, set()
    for pair in pairs:
        conv, bn = pair[:2]
        eps = pair[2] if len(pair) > 2 else identities.BN_EPS
        names = [f"{bn}.{f}" for f in identities.BN_FIELDS]
        missing = [n for n in [conv + ".weight"] + names if n not in state]
        if missing:
            raise ValueError(f"cannot fold BatchNorm '{bn}' into conv '{conv}': '{missing[0]}' is missing")
        if conv in folded or names[0] in dropped:
            raise ValueError(f"cannot fold BatchNorm '{bn}' into conv '{conv}': one of them is in two pairs")
        kernel = np.asarray(state[conv + ".weight"])
        gamma, beta, mean, var = (np.asarray(state[n]) for n in names)
        if not gamma.shape == beta.shape == mean.shape == var.shape == kernel.shape[:1]:
            raise ValueError(f"cannot fold BatchNorm '{bn}' (shape {list(gamma.shape)}) into conv '{conv}' "
                             f"({kernel.shape[0]} output channels)")
        folded[conv] = identities.fold_conv_bn(kernel, state.get(conv + ".bias"), gamma, beta, mean, var, eps)
        dropped.update(names + [conv + ".bias"])
    out = {}
    for name, value in state.items():
        if name in dropped:
            continue
        conv = name[:-len(".weight")]
        if name.endswith(".weight") and conv in folded:
            out[name], out[conv + ".bias"] = folded[conv]
        else:
            out[name] = value
    return out, list(pairs)
