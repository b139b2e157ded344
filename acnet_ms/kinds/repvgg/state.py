"""MindCV's RepVGG blocks in checkpoint dicts: their entries, and their fold into the one deploy conv.

MindCV's ``RepVGGBlock`` (``mindcv/models/repvgg.py``) trains three branches
on the same input and sums them; at inference they are one conv with bias,
``rbr_reparam``.  The entries of the block at prefix ``P``:

    P.rbr_dense.0.weight   P.rbr_dense.1.{gamma,beta,moving_mean,moving_variance}   k x k conv + BN
    P.rbr_1x1.0.weight     P.rbr_1x1.1.{...}                                         1 x 1 conv + BN
    P.rbr_identity.{...}                                    BN of the input (where in == out, stride 1)
        ->  P.rbr_reparam.weight, P.rbr_reparam.bias

The fold (Ding et al., RepVGG, CVPR 2021, Sec. 3.3), every step one of
:mod:`acnet_ms.kinds.identities`'s identities: each branch's BN folds into its kernel
(``fuse_bn``, with that BN's own eps); the 1 x 1 kernel is a k x k kernel
zero outside its centre (``embed_center``: both convs share the stride, and
the 1 x 1 one pads k // 2 less, so their windows share centres); the identity
is the kernel ``identity_kernel`` (1 at ``[i, i % (C/g), k//2, k//2]``, so
grouped blocks too); the three kernels and biases add up (``sum_branches``).

A block's layout entry (``acnet_ms.kinds.repvgg.blocks.repvgg_layout``, read
from the model): ``kind`` (``repvgg``), ``slot`` (``bias``: the fold is the
deploy conv's kernel and bias), ``in_channels``, ``groups``, ``kernel``,
``identity`` (has the identity branch) and ``eps`` (per branch: ``dense``,
``1x1``, ``identity``).

This module must not import MindSpore.
"""
import numpy as np

from .. import identities
from ..._moved import moved_attr as _moved_attr

#: the kind's name in the table (:mod:`acnet_ms.kinds.repvgg.kind`)
KIND = "repvgg"

#: the branches of a block, and the cell each lives in
BRANCH_CELLS = {"dense": "rbr_dense", "1x1": "rbr_1x1", "identity": "rbr_identity"}

#: the deploy conv's cell
DEPLOY_CELL = "rbr_reparam"

#: an entry every training-form block has once, whatever its dense branch became (an ACB's, say)
MARKER = ".rbr_1x1.0.weight"


def branch_entries(prefix, info):
    """``{"dense": [kernel, gamma, beta, mean, var], "1x1": [...], "identity": [gamma, ...]}``: the
    checkpoint names of the block at ``prefix``, by branch (no ``identity`` where it has none)."""
    out = {}
    for branch in ("dense", "1x1"):
        cell = f"{prefix}.{BRANCH_CELLS[branch]}"
        out[branch] = [f"{cell}.0.weight"] + [f"{cell}.1.{f}" for f in identities.BN_FIELDS]
    if info["identity"]:
        out["identity"] = [f"{prefix}.{BRANCH_CELLS['identity']}.{f}" for f in identities.BN_FIELDS]
    return out


def entries(prefix, info):
    """The training-form names of the block at ``prefix``, in one list."""
    return [n for names in branch_entries(prefix, info).values() for n in names]


def deploy_entries(prefix):
    """The deploy form's names of the block at ``prefix``: its conv's kernel and bias."""
    return [f"{prefix}.{DEPLOY_CELL}.weight", f"{prefix}.{DEPLOY_CELL}.bias"]


def fold_block(state, prefix, info):
    """``(kernel, bias)``: the block at ``prefix`` as one k x k conv with bias, in its kernel's dtype."""
    names = branch_entries(prefix, info)
    k, groups, channels = info["kernel"], info["groups"], info["in_channels"]
    dense = np.asarray(state[names["dense"][0]])
    one = np.asarray(state[names["1x1"][0]])
    want = (dense.shape[0], channels // groups)
    for name, kernel, size in ((names["dense"][0], dense, k), (names["1x1"][0], one, 1)):
        if kernel.ndim != 4 or tuple(kernel.shape[1:]) != (want[1], size, size) or kernel.shape[0] != want[0]:
            raise ValueError(f"RepVGG block '{prefix}': '{name}' has shape {list(kernel.shape)}, expected "
                             f"{[want[0], want[1], size, size]}")
    eps = info["eps"]
    pairs = [identities.fuse_bn(dense, *(state[n] for n in names["dense"][1:]), eps=eps.get("dense", identities.BN_EPS))]
    k1, b1 = identities.fuse_bn(one, *(state[n] for n in names["1x1"][1:]), eps=eps.get("1x1", identities.BN_EPS))
    pairs.append((identities.embed_center(k1, k), b1))
    if "identity" in names:
        if want[0] != channels:
            raise ValueError(f"RepVGG block '{prefix}': an identity branch needs as many outputs as inputs "
                             f"({want[0]} != {channels})")
        ident = identities.identity_kernel(channels, channels // groups, k)
        pairs.append(identities.fuse_bn(ident, *(state[n] for n in names["identity"]),
                                  eps=eps.get("identity", identities.BN_EPS)))
    kernel, bias = identities.sum_branches(pairs)
    return kernel.astype(dense.dtype), np.asarray(bias).astype(dense.dtype)


# the names this module had before the package was laid out by role, and check_blocks / fold_blocks, which
# the kinds' one fold (acnet_ms.reparam.state) does for these blocks as for every kind's (acnet_ms/_moved.py)
__getattr__ = _moved_attr(__name__)
