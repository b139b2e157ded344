"""RepOpt's rules (Ding et al., "Re-parameterizing Your Optimizers rather than Architectures", ICLR 2023) for a
constant-scale rep block (``csla``), in pure numpy.

A constant-scale block's kernel is ``W' = sum_i g_i K_i + embed_center(g_s S) + g_id I`` (:func:`fold.fold_csla`)
with the gains g held fixed.  Train its branches K_i, S by SGD with momentum mu, weight decay lam, learning rate
eta: ``dL/dK_i = g_i G`` and ``dL/dS = g_s G_centre`` with G = dL/dW', and each branch's velocity moves as
``V_i <- mu V_i + g_i G + lam K_i``.  The sum ``V' = sum_i g_i V_i + embed_center(g_s V_s)`` then moves as

    V' <- mu V' + M (.) G + lam (W' - g_id I),        W' <- W' - eta V'

    M = sum_i g_i^2 at every tap, + g_s^2 at the centre tap         (row by row: each output channel its own)

so training W' as ONE conv with the gradient multiplier M and the weight decay pulled towards ``g_id I``
instead of 0 gives the branches' weights step for step (Nesterov's momentum too: its step is linear in the
same terms).  The rule of initialization: W' starts where the branches start, ``fold_csla`` of their initial
kernels.  Exact for SGD only: Adam-family updates and gradient clipping are not linear in G.
"""
import numpy as np

from ..identities import embed_center, identity_kernel


def grad_multiplier(shape, dense_gains, scale_gain=None):
    """M for a (O, C/g, k, k) kernel: ``sum_i g_i^2`` at every tap, ``+ g_s^2`` at the centre (the formula
    above); ``dense_gains`` the k x k branches' gains, ``scale_gain`` the 1 x 1 branch's or ``None``."""
    out, per_group, kh, kw = shape
    rows = sum(np.asarray(g, np.float64) ** 2 for g in dense_gains)
    multiplier = np.broadcast_to(rows.reshape(-1, 1, 1, 1), (out, per_group, kh, kw)).copy()
    if scale_gain is not None:
        centre = np.asarray(scale_gain, np.float64) ** 2
        multiplier += embed_center(np.broadcast_to(centre.reshape(-1, 1, 1, 1), (out, per_group, 1, 1)), kh)
    return multiplier


def decay_anchor(shape, identity_gain=None):
    """Where the weight decay pulls W': ``g_id I`` (zero without an identity branch)."""
    out, per_group, size, _ = shape
    if identity_gain is None:
        return np.zeros(shape)
    return np.asarray(identity_gain, np.float64).reshape(-1, 1, 1, 1) * identity_kernel(out, per_group, size)


def gains_of(state, prefix, info):
    """``(dense_gains, scale_gain, identity_gain)`` of the constant-scale block at ``prefix`` of a checkpoint
    dict (its layout entry ``info``); the last two ``None`` where the block has no such branch."""
    dense = [np.asarray(state[f"{prefix}.dense.{i}.gain"]) for i in range(info["num_kxk"])]
    scale = np.asarray(state[f"{prefix}.scale.gain"]) if info["has_scale"] else None
    identity = np.asarray(state[f"{prefix}.identity_gain"]) if info["has_identity"] else None
    return dense, scale, identity
