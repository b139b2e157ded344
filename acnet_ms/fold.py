"""Fold math for Asymmetric Convolution Blocks, in pure numpy.

Every identity used to turn a trained ACB into one plain convolution lives
here, as a small function a reader can check against the ACNet paper
(Ding et al., ICCV 2019, Sec. 3.3):

    BN fold      BN(K * x) = (K * t) * x + (beta - mu * t),  t = gamma / sqrt(var + eps)
    centre embed a 1 x k (k x 1) kernel is a k x k kernel that is zero outside
                 its centre row (column)
    branch sum   sum_i (K_i * x + b_i) = (sum_i K_i) * x + sum_i b_i
                 (valid because all branches share stride, padding and the
                 positions of their sampling windows' centres)

The Cells (``acnet_ms.layers.ACBlock``) and the checkpoint converter
(``convert.py``) call these same functions; ``convert.py --fold_bn`` then
applies the BN fold to every conv + BN pair of the plain checkpoint
(:func:`fold_bns`, pairs by the naming rule :func:`bn_slot_for`).
Arithmetic runs in float64; the results come back in the dtype of the square
kernel (of the conv, for :func:`fold_bns`).

This module must not import MindSpore.
"""
import numpy as np

#: epsilon of every BatchNorm2d the models build (MindSpore's default)
BN_EPS = 1e-5

#: names of the three branches of an ACB, as in the original ACNet
BRANCHES = ("square", "hor", "ver")

#: the four arrays of a MindSpore BatchNorm cell
BN_FIELDS = ("gamma", "beta", "moving_mean", "moving_variance")

#: entries a training checkpoint may hold beside the network's parameters:
#: optimizer slots (by prefix) and optimizer / trainer scalars (by name)
TRAINER_PREFIXES = ("moments.", "accum.", "adam_m.", "adam_v.", "ema.")
TRAINER_NAMES = frozenset({
    "learning_rate", "global_step", "momentum", "weight_decay", "beta1_power", "beta2_power",
    "scale_sense", "loss_scale", "current_iterator_step", "last_overflow_iterator_step",
    "epoch_num", "step_num",
})


def fuse_bn(kernel, gamma, beta, mean, var, eps=BN_EPS):
    """Fold a BatchNorm (inference form) into the convolution before it.

    Returns ``(kernel * t, beta - mean * t)`` with ``t = gamma / sqrt(var + eps)``
    broadcast over the output-channel axis 0 of ``kernel``.
    """
    t = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    k = np.asarray(kernel, np.float64) * t.reshape((-1,) + (1,) * (np.ndim(kernel) - 1))
    b = np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * t
    return k, b


def embed_center(kernel, size):
    """Zero-pad a (O, I, kh, kw) kernel with odd kh, kw <= size to (O, I, size, size), centred.

    A 1 x k kernel lands on the centre row, a k x 1 kernel on the centre column.
    """
    kernel = np.asarray(kernel)
    kh, kw = kernel.shape[2:]
    if kh % 2 == 0 or kw % 2 == 0 or kh > size or kw > size:
        raise ValueError(f"cannot centre a {kh}x{kw} kernel in {size}x{size}")
    top, left = (size - kh) // 2, (size - kw) // 2
    out = np.zeros(kernel.shape[:2] + (size, size), kernel.dtype)
    out[:, :, top:top + kh, left:left + kw] = kernel
    return out


def sum_branches(pairs):
    """Sum (kernel, bias) pairs of branches that share their sampling grid."""
    kernels, biases = zip(*pairs)
    return sum(kernels), sum(biases)


def fold_acb(square, hor, ver, eps=BN_EPS):
    """Fold one ACB into a single k x k kernel and bias.

    ``square``, ``hor`` and ``ver`` are each ``(kernel, gamma, beta, mean, var)``
    with kernels of shape (O, I, k, k), (O, I, 1, k) and (O, I, k, 1).
    Returns ``(kernel, bias)`` in the square kernel's dtype.
    """
    size = np.shape(square[0])[2]
    pairs = []
    for kernel, gamma, beta, mean, var in (square, hor, ver):
        k, b = fuse_bn(kernel, gamma, beta, mean, var, eps)
        pairs.append((embed_center(k, size), b))
    kernel, bias = sum_branches(pairs)
    dtype = np.asarray(square[0]).dtype
    return kernel.astype(dtype), bias.astype(dtype)


def bias_as_bn(bias, eps=BN_EPS):
    """A BatchNorm (inference form) that adds ``bias`` and changes nothing else.

    Statistics are the identity ones (mean 0, variance 1); gamma is
    sqrt(1 + eps) so that gamma / sqrt(var + eps) == 1 and BN(y) = y + bias.
    """
    bias = np.asarray(bias)
    return {
        "gamma": np.full(bias.shape, np.sqrt(1.0 + eps), bias.dtype),
        "beta": bias.copy(),
        "moving_mean": np.zeros(bias.shape, bias.dtype),
        "moving_variance": np.ones(bias.shape, bias.dtype),
    }


#: convs named otherwise than ``convN`` / index, and the name of the BN after each (MindCV's names)
NAMED_BN_SLOTS = {
    "fc_reduce": "bn",  # the Selective Kernel attention: fc_reduce -> bn -> ReLU -> fc_select
}


def bn_slot_for(conv_name):
    """Name of the BatchNorm that follows the conv ``conv_name`` in a plain model.

    The models follow MindCV's naming: ``convN`` is followed by ``bnN``
    (``layer1.0.conv2`` -> ``layer1.0.bn2``), in a sequential container the
    conv at index i is followed by the BN at i + 1 (``...features.0`` ->
    ``...features.1``), and the convs of :data:`NAMED_BN_SLOTS` by the BN
    named there (``...attn.fc_reduce`` -> ``...attn.bn``).
    """
    head, _, last = conv_name.rpartition(".")
    prefix = head + "." if head else ""
    if last in NAMED_BN_SLOTS:
        return prefix + NAMED_BN_SLOTS[last]
    if last.startswith("conv"):
        return prefix + "bn" + last[len("conv"):]
    if last.isdigit():
        return prefix + str(int(last) + 1)
    raise ValueError(f"no BatchNorm naming rule for conv '{conv_name}'")


def is_training_state(name):
    """True for checkpoint entries that belong to the optimizer or the trainer, not the network."""
    return name in TRAINER_NAMES or name.startswith(TRAINER_PREFIXES)


def acb_prefixes(state):
    """Names of the ACBs in a checkpoint dict, in file order (``X`` for ``X.square_conv.weight``).

    Optimizer slots (``moments.X.square_conv.weight``) are not ACBs.
    """
    tail = ".square_conv.weight"
    return [name[:-len(tail)] for name in state if name.endswith(tail) and not is_training_state(name)]


def fold_state(state, eps=BN_EPS):
    """Fold every ACB of a training-form checkpoint into plain-model entries.

    ``state`` maps parameter names to numpy arrays.  An ACB stored at ``X``
    (``X.square_conv.weight``, ``X.square_bn.gamma``, ..., ``X.ver_bn.*``) becomes
    ``X.weight`` (the folded kernel) and the BatchNorm slot that follows ``X``
    in the plain model (see :func:`bn_slot_for`), holding the folded bias with
    identity statistics (:func:`bias_as_bn`).  Optimizer and trainer entries
    are dropped; every other entry is copied unchanged.

    Returns ``(new_state, acb_names)``; raises ValueError on an incomplete
    ACB or when a folded entry would overwrite one already in ``state``.
    """
    prefixes = acb_prefixes(state)
    consumed = set()
    out = {}
    folded = {}
    for p in prefixes:
        branches = []
        for br in BRANCHES:
            names = [f"{p}.{br}_conv.weight"] + [f"{p}.{br}_bn.{f}" for f in BN_FIELDS]
            missing = [n for n in names if n not in state]
            if missing:
                raise ValueError(f"ACB '{p}' is incomplete: '{missing[0]}' is missing")
            consumed.update(names)
            branches.append(tuple(state[n] for n in names))
        kernel, bias = fold_acb(*branches, eps=eps)
        folded[p + ".weight"] = kernel
        bn = bn_slot_for(p)
        for field, value in bias_as_bn(bias, eps).items():
            folded[f"{bn}.{field}"] = value
    for name, value in state.items():
        if name in consumed or is_training_state(name):
            continue
        out[name] = value
    clash = sorted(set(out) & set(folded))
    if clash:
        raise ValueError(f"'{clash[0]}' is both stored in the checkpoint and produced by folding an ACB")
    out.update(folded)
    return out, prefixes


def plain_to_acb(state, acb_names):
    """Map a plain checkpoint onto ACBs so that they compute the plain function.

    For each ACB ``X``, the plain conv ``X.weight`` becomes ``X.square_conv.weight``
    and the BN that follows it (:func:`bn_slot_for`) becomes ``X.square_bn``; the
    asymmetric branches get BN gamma = beta = 0, so each adds exactly zero until
    training moves them.  Their kernels and statistics are left to the model.
    ACBs without a plain conv in ``state`` are left alone.
    """
    out = dict(state)
    for x in acb_names:
        conv, bn = f"{x}.weight", bn_slot_for(x)
        if conv not in state:
            continue
        out[f"{x}.square_conv.weight"] = out.pop(conv)
        for field in BN_FIELDS:
            if f"{bn}.{field}" in out:
                out[f"{x}.square_bn.{field}"] = out.pop(f"{bn}.{field}")
        channels = np.shape(state[conv])[0]
        zeros = np.zeros(channels, np.asarray(state[conv]).dtype)
        for branch in ("hor", "ver"):
            out[f"{x}.{branch}_bn.gamma"] = zeros
            out[f"{x}.{branch}_bn.beta"] = zeros
    return out


def conv_bn_pairs(state):
    """``[(conv, bn), ...]`` for every BatchNorm of a plain checkpoint, in file order.

    A BatchNorm ``Y`` (``Y.moving_variance``) pairs with the conv ``X`` (a 4-d
    ``X.weight``) for which ``bn_slot_for(X) == Y``.  ValueError names the
    first BatchNorm that no conv precedes by that rule: it cannot be folded.
    """
    convs = {}
    for name, value in state.items():
        if name.endswith(".weight") and np.ndim(value) == 4 and not is_training_state(name):
            try:
                convs[bn_slot_for(name[:-len(".weight")])] = name[:-len(".weight")]
            except ValueError:  # a conv without a BN after it (attention's fc_select, ...)
                pass
    tail = ".moving_variance"
    pairs = []
    for name in state:
        if name.endswith(tail) and not is_training_state(name):
            bn = name[:-len(tail)]
            if bn not in convs:
                rules = ", ".join(["convN -> bnN", "index i -> i + 1"] +
                                  [f"{c} -> {b}" for c, b in NAMED_BN_SLOTS.items()])
                raise ValueError(f"BatchNorm '{bn}' follows no convolution by the naming rule ({rules}): "
                                 f"it cannot be folded")
            pairs.append((convs[bn], bn))
    return pairs


def fold_bns(state, pairs=None, eps=BN_EPS):
    """Fold every BatchNorm of a plain checkpoint into the conv before it, as that conv's bias.

    ``pairs`` lists ``(conv, bn)`` names; by default :func:`conv_bn_pairs`
    finds them.  The conv ``X`` gets the folded kernel ``X.weight`` and a bias
    ``X.bias`` (a bias the conv already has is folded in too); the entries
    ``Y.gamma``, ``Y.beta``, ``Y.moving_mean``, ``Y.moving_variance`` go.
    Optimizer and trainer entries are dropped; every other entry is copied.
    Entries keep the checkpoint's order (the bias right after its kernel).

    Returns ``(new_state, pairs)``; ValueError when a BatchNorm would remain
    (no conv before it, or not in ``pairs``), is incomplete or folded twice,
    or does not match its conv's output channels.
    """
    if pairs is None:
        pairs = conv_bn_pairs(state)
    folded, dropped = {}, set()
    for conv, bn in pairs:
        names = [f"{bn}.{f}" for f in BN_FIELDS]
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
        if conv + ".bias" in state:  # BN(K x + c) folds like BN(K x) with the mean moved by c
            mean = np.asarray(mean, np.float64) - np.asarray(state[conv + ".bias"], np.float64)
        k, b = fuse_bn(kernel, gamma, beta, mean, var, eps)
        folded[conv] = k.astype(kernel.dtype), b.astype(kernel.dtype)
        dropped.update(names + [conv + ".bias"])
    out = {}
    for name, value in state.items():
        if name in dropped or is_training_state(name):
            continue
        if name.endswith(".moving_variance"):
            raise ValueError(f"BatchNorm '{name[:-len('.moving_variance')]}' is not paired with a conv: "
                             f"it cannot be folded")
        conv = name[:-len(".weight")]
        if name.endswith(".weight") and conv in folded:
            out[name], out[conv + ".bias"] = folded[conv]
        else:
            out[name] = value
    return out, pairs
