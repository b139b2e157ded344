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
(``convert.py``) call these same functions.  Arithmetic runs in float64; the
results come back in the dtype of the square kernel.

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


def bn_slot_for(conv_name):
    """Name of the BatchNorm that follows the conv ``conv_name`` in a plain model.

    The models follow MindCV's naming: ``convN`` is followed by ``bnN``
    (``layer1.0.conv2`` -> ``layer1.0.bn2``), and in a sequential container
    the conv at index i is followed by the BN at i + 1
    (``...features.0`` -> ``...features.1``).
    """
    head, _, last = conv_name.rpartition(".")
    prefix = head + "." if head else ""
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
