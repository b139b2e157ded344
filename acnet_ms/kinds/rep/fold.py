"""rep's fold (RepVGG, Ding et al., CVPR 2021; MobileOne, Vasu et al., CVPR 2023), in pure numpy.

No MindSpore here; the identities come from :mod:`acnet_ms.kinds.identities`.
"""
import numpy as np

from ..identities import BN_EPS, embed_center, fuse_bn, identity_kernel, sum_branches


# ---------------------------------------------------------------- rep (RepVGG, Ding et al., CVPR 2021; MobileOne,
# Vasu et al., CVPR 2023)
#
#    y = sum_i BN_i(K_i * x) + BN_s(S * x) + BN_id(x)
#      = (sum_i t_i K_i + embed_center(t_s S) + t_id I) * x + (sum_i c_i + c_s + c_id)
#
# with t, c the scale and shift of each BN's fold (fuse_bn), S the 1 x 1 ("scale") kernel and I
# identity_kernel; a branch without BN has t = 1, c = 0.  Exact when the 1 x 1 branch reads the centre tap
# of the k x k window and the identity branch's output is the input on the same grid (stride 1, the
# padding k // 2 times the dilation on every side): see RepBlock.


def fold_rep(dense, scale=None, identity=None, eps=BN_EPS, bias=None):
    """One rep block as a single k x k kernel and bias (the formula above).

    ``dense``: the k x k branches, each ``(kernel, gamma, beta, mean, var)`` or ``(kernel,)`` without BN;
    ``scale``: the 1 x 1 branch alike, or ``None``; ``identity``: ``None`` (absent), ``()`` (present, no BN)
    or ``(gamma, beta, mean, var)``; ``bias``: a bias added after the sum.  The kernels are
    (O, C/g, k, k) and (O, C/g, 1, 1); an identity needs O == C.  Returns ``(kernel, bias)`` in the first
    kernel's dtype, the bias ``None`` when no branch has a BN and no ``bias`` is given.
    """
    first = np.asarray(dense[0][0])
    out, per_group, size = first.shape[:3]

    def folded(branch, kernel):
        return (kernel, 0.0) if len(branch) == 1 else fuse_bn(kernel, *branch[1:], eps=eps)

    pairs = [folded(b, np.asarray(b[0], np.float64)) for b in dense]
    if scale is not None:
        pairs.append(folded(scale, embed_center(np.asarray(scale[0], np.float64), size)))
    if identity is not None:
        pairs.append(folded((None,) + tuple(identity), identity_kernel(out, per_group, size)))
    kernel, total = sum_branches(pairs)
    with_bn = any(len(b) > 1 for b in dense) or (scale is not None and len(scale) > 1) or bool(identity)
    if bias is not None:
        total = total + np.asarray(bias, np.float64)
    if not with_bn and bias is None:
        return kernel.astype(first.dtype), None
    return kernel.astype(first.dtype), np.broadcast_to(total, (out,)).astype(first.dtype)


# ---------------------------------------------------------------- the quantization-aware form (QARepVGG, Chu et
# al., AAAI 2024): BN on the k x k branches only, the 1 x 1 branch and the identity bare, one BN after the sum
#
#    y = BN_post( sum_i BN_i(K_i * x) + S * x + x )
#      = t_p (sum_i t_i K_i + embed_center(S) + I) * x + (beta_p - (mu_p - sum_i c_i) t_p)
#
# the inner sum is fold_rep's with bare 1 x 1 and identity branches; the BN after it folds on top, its mean
# less the inner bias (t_p = gamma_p / sqrt(var_p + eps)).


def fold_quant_aware(dense, scale, identity, post_bn, eps=BN_EPS):
    """One quantization-aware rep block as a single kernel and bias (the formula above).

    ``dense``: the k x k branches, each ``(kernel, gamma, beta, mean, var)``; ``scale``: ``(kernel,)`` (the
    bare 1 x 1 branch) or ``None``; ``identity``: whether the bare identity branch is there; ``post_bn``:
    ``(gamma, beta, mean, var)`` of the BN after the sum.  Returns ``(kernel, bias)`` in the first kernel's
    dtype."""
    dtype = np.asarray(dense[0][0]).dtype

    def wide(branch):
        return tuple(np.asarray(a, np.float64) for a in branch)

    kernel, inner = fold_rep([wide(b) for b in dense], None if scale is None else wide(scale),
                             () if identity else None, eps=eps)
    gamma, beta, mean, var = wide(post_bn)
    kernel, bias = fuse_bn(kernel, gamma, beta, mean - inner, var, eps=eps)
    return kernel.astype(dtype), bias.astype(dtype)


# ---------------------------------------------------------------- the constant-scale linear form (RepOpt's CSLA,
# Ding et al., ICLR 2023): every branch bare, times a per-output-channel gain; the site's own BN after the sum
#
#    y = sum_i g_i (K_i * x) + g_s (S * x) + g_id x
#      = (sum_i g_i K_i + embed_center(g_s S) + g_id I) * x        (+ the conv's bias, if it has one)
#
# each gain g is a vector over the output channels, multiplying its branch's kernel row by row.


def fold_csla(dense, scale=None, identity=None, bias=None):
    """One constant-scale linear rep block as a single kernel (the formula above).

    ``dense``: the k x k branches, each ``(kernel, gain)``; ``scale``: the 1 x 1 branch alike, or ``None``;
    ``identity``: the identity's gain, or ``None`` (absent); ``bias``: the conv's bias, or ``None``.  Returns
    ``(kernel, bias)`` in the first kernel's dtype (the bias ``None`` when none is given)."""
    first = np.asarray(dense[0][0])
    out, per_group, size = first.shape[:3]

    def gained(kernel, gain):
        return np.asarray(gain, np.float64).reshape(-1, 1, 1, 1) * np.asarray(kernel, np.float64)

    kernel = sum(gained(k, g) for k, g in dense)
    if scale is not None:
        kernel = kernel + embed_center(gained(*scale), size)
    if identity is not None:
        kernel = kernel + gained(identity_kernel(out, per_group, size), identity)
    return kernel.astype(first.dtype), None if bias is None else np.asarray(bias).astype(first.dtype)
