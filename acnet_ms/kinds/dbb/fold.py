"""DBB's fold (Diverse Branch Block, Ding et al., CVPR 2021, Sec. 3.2-3.3), in pure numpy.

No MindSpore here; the identities come from :mod:`acnet_ms.kinds.identities`.
"""
import numpy as np

from ..identities import BN_EPS, avg_kernel, embed_center, fuse_bn, merge_sequential, sum_branches


# ---------------------------------------------------------------- DBB (Diverse Branch Block)
#
# y = BN_o(K_o * x) + BN_1(K_1 * x) + avgBN(avg(pad_{v}(BN_a(K_a * x)))) + BN_2(K_2 * pad_{v1}(BN_1'(K_1' * x)))
# (pad_v: the BN-and-pad, padded with what its BN gives for a zero input), as one conv by
# fuse_bn, embed_center, avg_kernel, identity_kernel, merge_sequential and the branch sum.


def _affine(kernel, bn, eps):
    """``(kernel, bias)`` in float64: ``fuse_bn`` for a BN ``(gamma, beta, mean, var)``, bias 0 for ``None``."""
    if bn is None:
        return np.asarray(kernel, np.float64), np.zeros(np.shape(kernel)[0])
    return fuse_bn(kernel, *bn, eps=eps)


def fold_dbb(origin, one=None, avg=None, seq=None, groups=1, eps=BN_EPS, bias=None):
    """Fold one Diverse Branch Block into a single k x k kernel and bias (float64 inside).

    Each BN below is ``(gamma, beta, moving_mean, moving_variance)`` or ``None`` (a branch without BNs).

    * ``origin = (K_o, bn_o)``: the k x k conv + BN.  ``one = (K_1, bn_1)``: the 1 x 1 conv + BN, embedded
      at the window's centre (``embed_center``), or ``None`` (depthwise blocks have none).
    * ``avg = (K_a or None, bn_a, avgbn)``: 1 x 1 conv + BN (absent for depthwise: ``K_a = None``), k x k
      average pooling as the conv ``A = avg_kernel`` and its BN; with a 1 x 1 conv,
      ``merge_sequential(fuse(K_a, bn_a), fuse(A, avgbn))``.  ``avg=None``: no average branch.
    * ``seq = (K_1', bn_1', K_2, bn_2)``: the first kernel (D, C/g, 1, 1), identity already added for an
      identity-based 1 x 1, then the k x k conv: ``merge_sequential(fuse(K_1', bn_1'), fuse(K_2, bn_2))``.

    All branches share the k x k conv's grid; the BN-and-pads carry their BN's value for a zero input,
    so the sum is exact: ``kernel = sum of the branch kernels``, ``bias = sum of their biases (+ bias)``.
    Returns ``(kernel, bias)`` in ``K_o``'s dtype; ``bias`` is ``None`` when no BN exists and no
    ``bias`` is given.
    """
    k_o, bn_o = origin
    size, out = np.shape(k_o)[2], np.shape(k_o)[0]
    pairs = [_affine(k_o, bn_o, eps)]
    if one is not None:
        k, b = _affine(one[0], one[1], eps)
        pairs.append((embed_center(k, size), b))
    if avg is not None:
        k_a, bn_a, avgbn = avg
        if k_a is None:
            pairs.append(_affine(avg_kernel(out, np.shape(k_o)[1], size), avgbn, eps))
        else:
            pooled = _affine(avg_kernel(out, out // groups, size), avgbn, eps)
            pairs.append(merge_sequential(*_affine(k_a, bn_a, eps), *pooled, groups=groups))
    if seq is not None:
        pairs.append(merge_sequential(*_affine(seq[0], seq[1], eps), *_affine(seq[2], seq[3], eps), groups=groups))
    kernel, total = sum_branches(pairs)
    dtype = np.asarray(k_o).dtype
    has_bn = any(b is not None for b in (bn_o, one and one[1], avg and avg[2], seq and seq[3]))
    if bias is not None:
        total = total + np.asarray(bias, np.float64)
    elif not has_bn:
        return kernel.astype(dtype), None
    return kernel.astype(dtype), total.astype(dtype)
