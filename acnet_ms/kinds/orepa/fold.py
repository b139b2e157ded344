"""OREPA's generated kernel (Hu et al., CVPR 2022), in pure numpy.

No MindSpore here; the identities come from :mod:`acnet_ms.kinds.identities`.
"""
import numpy as np

from ..identities import embed_center, identity_kernel, merge_sequential, scale_out


# ---------------------------------------------------------------- OREPA
#
# OREPA (Hu et al., CVPR 2022) generates one k x k kernel from six linear branches, each scaled per
# output channel by a row of a learnt vector v (6, O), no BN inside:
#
#    K = v0 . W + v1 . (A o P_avg) + v2 . (A' o F) + v3 . (W2 o (W1 + I)) + v4 . embed(W1x1) + v5 . (PW o DW)
#
# with "." scaling output channel o by v_b[o] and "o" the composition of a 1 x 1 conv with a filter
# after it (merge_1x1_filter), of a 1 x 1 conv with a k x k conv (merge_sequential), of a depthwise
# k x k conv with a 1 x 1 conv (merge_depthwise_pointwise).  Every composition is exact with the
# conv's zero padding: the first conv of each has no bias, so it maps the zero border to zeros.


def prior_filter(channels, size):
    """OREPA's frequency prior (``fre_init``), a fixed (channels, size, size) filter per output channel:
    ``F[o, h, w] = cos(pi (h + 1/2)(o + 1) / k)`` for ``o < C/2`` and ``cos(pi (w + 1/2)(o + 1 - C/2) / k)``
    otherwise (C/2 a real number, as in the original; it writes k = 3 and fills only 3 x 3, this is the
    same basis for any k)."""
    half = channels / 2
    idx = np.arange(size) + 0.5
    out = np.empty((channels, size, size))
    for o in range(channels):
        if o < half:
            out[o] = np.cos(np.pi * idx * (o + 1) / size)[:, None]
        else:
            out[o] = np.cos(np.pi * idx * (o + 1 - half) / size)[None, :]
    return out


def merge_1x1_filter(k1, filt):
    """A bias-free 1 x 1 conv ``k1`` (O, C/g, 1, 1), any groups, followed by a fixed per-channel filter
    ``filt`` (O, k, k) (a depthwise conv: k x k averaging when ``filt`` = 1/k^2, OREPA's prior ``F``):
    ``K[o, c, h, w] = k1[o, c] filt[o, h, w]`` (float64)."""
    k1 = np.asarray(k1, np.float64)
    return k1[:, :, :1, :1] * np.asarray(filt, np.float64)[:, None]


def merge_depthwise_pointwise(dw, pw, channels, groups=1):
    """A bias-free depthwise k x k conv ``dw`` (M C, 1, k, k) on ``channels`` = C inputs (channel multiplier
    M: output ``c M + t`` reads input c) followed by a 1 x 1 conv ``pw`` (O, M C/g, 1, 1) in ``groups``
    groups, as one (O, C/g, k, k) kernel (float64):
    in group j, ``K[o, c] = sum_t pw[o, c M + t] dw[(j C/g + c) M + t]``."""
    dw, pw = np.asarray(dw, np.float64), np.asarray(pw, np.float64)
    o, c = pw.shape[0], channels
    m = dw.shape[0] // c
    dw = dw[:, 0].reshape(groups, c // groups, m, *dw.shape[2:])          # (g, C/g, M, k, k)
    pw = pw[:, :, 0, 0].reshape(groups, o // groups, c // groups, m)      # (g, O/g, C/g, M)
    return np.einsum("gocm,gcmhw->gochw", pw, dw, optimize=True).reshape(o, c // groups, *dw.shape[3:])


#: OREPA's six branches, in the order of the rows of its vector
OREPA_BRANCHES = ("origin", "avg", "prior", "1x1_kxk", "1x1", "dws")


def fold_orepa(branches, vector, groups=1, fixed=None, dws_groups=None):
    """OREPA's generated kernel (the formula above), float64, from the branches present.

    ``branches``: ``{name: arrays}``, names from :data:`OREPA_BRANCHES`: ``origin`` (O, C/g, k, k);
    ``avg``, ``prior``, ``1x1`` (O, C/g, 1, 1): the 1 x 1 convs before the k x k averaging, before the
    prior filter, and the 1 x 1 branch; ``1x1_kxk`` ``(idconv1, conv2)``: the 1 x 1 conv (T, C/g, 1, 1),
    less the identity (``identity_kernel``), before ``conv2`` (O, T/g, k, k); ``dws`` ``(dw, pw)``:
    (M C, 1, k, k) and (O, M C/g, 1, 1).  ``vector``: one row of O scales per branch present, in
    :data:`OREPA_BRANCHES` order.  ``fixed``: the fixed tensors of the formula where a file stores its own
    (``"avg"``, ``"prior"``: (O, k, k) filters; ``"identity"``: I, zero where the first conv is learnt
    whole); ``dws_groups``: the groups of the depthwise-separable branch's pointwise conv (``groups``).
    """
    origin = np.asarray(branches["origin"], np.float64)
    o, cg, k = origin.shape[:3]
    fixed = dict(fixed or {})

    def kernel_of(name, arrays):
        if name == "origin":
            return origin
        if name == "avg":
            return merge_1x1_filter(arrays, fixed.get("avg", np.full((o, k, k), 1.0 / (k * k))))
        if name == "prior":
            return merge_1x1_filter(arrays, fixed["prior"] if "prior" in fixed else prior_filter(o, k))
        if name == "1x1":
            return embed_center(np.asarray(arrays, np.float64), k)
        if name == "1x1_kxk":
            eye = fixed["identity"] if "identity" in fixed else identity_kernel(np.shape(arrays[0])[0], cg, 1)
            return merge_sequential(np.asarray(arrays[0], np.float64) + eye, None, arrays[1], None, groups)[0]
        return merge_depthwise_pointwise(arrays[0], arrays[1], cg * groups, groups if dws_groups is None else dws_groups)

    present = [name for name in OREPA_BRANCHES if name in branches]
    return sum(scale_out(kernel_of(name, branches[name]), v) for name, v in zip(present, np.asarray(vector)))
