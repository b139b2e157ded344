"""Fold math for Asymmetric Convolution Blocks, in pure numpy.

Every identity used to turn a trained ACB into one plain convolution lives
here, as a small function a reader can check against the ACNet paper
(Ding et al., ICCV 2019, Sec. 3.3):

    BN fold      BN(K * x) = (K * t) * x + (beta - mu * t),  t = gamma / sqrt(var + eps)
    embedding    a 1 x k (k x 1) kernel is a k x k kernel that is zero outside
                 one row (column): the centre one, or the bottom row (right
                 column) for the paper's border variant
    branch sum   sum_i (K_i * x + b_i) = (sum_i K_i) * x + sum_i b_i
                 (valid because all branches share stride and the positions
                 of their sampling windows, see ``ACBlock``)

The Cells (``acnet_ms.layers.ACBlock``) and the checkpoint converter call
these same functions; which checkpoint entries they are applied to is
``acnet_ms.state``'s business.  Arithmetic runs in float64; results come back
in the dtype of the square kernel.

This module must not import MindSpore.
"""
import numpy as np

#: epsilon of a BatchNorm2d unless the model says otherwise (MindSpore's default)
BN_EPS = 1e-5

#: names of the three branches of an ACB, as in the original ACNet
BRANCHES = ("square", "hor", "ver")

#: the four arrays of a MindSpore BatchNorm cell
BN_FIELDS = ("gamma", "beta", "moving_mean", "moving_variance")

#: where the asymmetric kernels sit in the k x k window
POSITIONS = ("center", "corner")

#: values of an ACB's ``branches``: which asymmetric kernels it has besides the square one
BRANCH_SETS = {"hv": ("hor", "ver"), "h": ("hor",), "v": ("ver",)}


def fuse_bn(kernel, gamma, beta, mean, var, eps=BN_EPS):
    """Fold a BatchNorm (inference form) into the convolution before it.

    Returns ``(kernel * t, beta - mean * t)`` with ``t = gamma / sqrt(var + eps)``
    broadcast over the output-channel axis 0 of ``kernel``.
    """
    t = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    k = np.asarray(kernel, np.float64) * t.reshape((-1,) + (1,) * (np.ndim(kernel) - 1))
    b = np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * t
    return k, b


def asym_offsets(size, position="center"):
    """``(row, col)``: the row of the k x k window that the 1 x k kernel covers, and the
    column that the k x 1 kernel covers (centre: k // 2; corner: k - 1, the bottom
    row and the right column)."""
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {', '.join(POSITIONS)}, got {position!r}")
    return (size // 2, size // 2) if position == "center" else (size - 1, size - 1)


def embed(kernel, size, top, left):
    """Zero-pad a (O, I, kh, kw) kernel to (O, I, size, size) with its first entry at (top, left)."""
    kernel = np.asarray(kernel)
    kh, kw = kernel.shape[2:]
    if top < 0 or left < 0 or top + kh > size or left + kw > size:
        raise ValueError(f"cannot place a {kh}x{kw} kernel at ({top}, {left}) in {size}x{size}")
    out = np.zeros(kernel.shape[:2] + (size, size), kernel.dtype)
    out[:, :, top:top + kh, left:left + kw] = kernel
    return out


def embed_center(kernel, size):
    """Zero-pad a (O, I, kh, kw) kernel with odd kh, kw <= size to (O, I, size, size), centred.

    A 1 x k kernel lands on the centre row, a k x 1 kernel on the centre column.
    """
    kh, kw = np.shape(kernel)[2:]
    if kh % 2 == 0 or kw % 2 == 0 or kh > size or kw > size:
        raise ValueError(f"cannot centre a {kh}x{kw} kernel in {size}x{size}")
    return embed(kernel, size, (size - kh) // 2, (size - kw) // 2)


def embed_branch(branch, kernel, size, position="center"):
    """Place one ACB branch's kernel in the k x k window: the square one as it is,
    ``hor`` (1 x k) on row ``asym_offsets(...)[0]``, ``ver`` (k x 1) on column ``[1]``."""
    row, col = asym_offsets(size, position)
    top, left = {"square": (0, 0), "hor": (row, 0), "ver": (0, col)}[branch]
    return embed(kernel, size, top, left)


def sum_branches(pairs):
    """Sum (kernel, bias) pairs of branches that share their sampling grid."""
    kernels, biases = zip(*pairs)
    return sum(kernels), sum(biases)


def fold_acb(square, hor=None, ver=None, eps=BN_EPS, position="center", bias=None):
    """Fold one ACB into a single k x k kernel and bias.

    Each branch is ``(kernel, gamma, beta, mean, var)``, or ``(kernel,)`` for a
    branch without BN; ``hor`` / ``ver`` may be ``None`` (absent).  Kernels are
    (O, I, k, k), (O, I, 1, k) and (O, I, k, 1).  ``bias`` is a bias added after
    the sum (an ACB without branch BNs that replaces a conv with bias).
    Returns ``(kernel, bias)`` in the square kernel's dtype; the bias is
    ``None`` when no branch has a BN and no ``bias`` is given.
    """
    size = np.shape(square[0])[2]
    pairs = []
    for name, branch in zip(BRANCHES, (square, hor, ver)):
        if branch is None:
            continue
        if len(branch) == 1:
            k, b = np.asarray(branch[0], np.float64), 0.0
        else:
            k, b = fuse_bn(*branch, eps=eps)
        pairs.append((embed_branch(name, k, size, position), b))
    kernel, total = sum_branches(pairs)
    if bias is not None:
        total = total + np.asarray(bias, np.float64)
    dtype = np.asarray(square[0]).dtype
    if bias is None and all(b is None or len(b) == 1 for b in (square, hor, ver)):
        return kernel.astype(dtype), None
    return kernel.astype(dtype), np.broadcast_to(total, kernel.shape[:1]).astype(dtype)


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


def fold_conv_bn(kernel, conv_bias, gamma, beta, mean, var, eps=BN_EPS):
    """BN(K * x + c) as one conv with bias: the BN fold with the mean moved by ``c`` (``None``: no bias).

    Returns ``(kernel, bias)`` in the kernel's dtype.
    """
    if conv_bias is not None:
        mean = np.asarray(mean, np.float64) - np.asarray(conv_bias, np.float64)
    k, b = fuse_bn(kernel, gamma, beta, mean, var, eps)
    dtype = np.asarray(kernel).dtype
    return k.astype(dtype), b.astype(dtype)


# ---------------------------------------------------------------- the other kinds' identities
#
# DBB (Ding et al., CVPR 2021, Sec. 3.2-3.3), OREPA (Hu et al., CVPR 2022) and
# RepVGG/MobileOne build their branches from a few more linear maps, each of
# which is again one k x k kernel (and bias):
#
#    identity     x = I * x,          I[i, i mod (C/g), c, c] = 1 (c = k // 2)
#    1 x 1        a 1 x 1 kernel is a k x k kernel zero outside its centre (embed_center)
#    average      k x k average pooling of each channel = A * x,
#                 A[i, i mod (C/g), :, :] = 1 / k^2 (padding counts as zeros)
#    sequential   K2 * (K1 * x + b1) + b2 = (K2 o K1) * x + (b2 + sum_{d,h,w} K2[o,d,h,w] b1[d]),
#                 K1 1 x 1, K2 k x k, within each of g groups; exact when K2's padding
#                 carries b1 (what K1 * x + b1 is for x = 0: DBB pads with its BN's output)


def identity_kernel(channels, in_per_group, size, dtype=np.float64):
    """The (channels, in_per_group, size, size) kernel of the identity map: 1 at
    ``[i, i % in_per_group, size // 2, size // 2]``, 0 elsewhere (grouped and depthwise convs included)."""
    kernel = np.zeros((channels, in_per_group, size, size), dtype)
    kernel[np.arange(channels), np.arange(channels) % in_per_group, size // 2, size // 2] = 1
    return kernel


def avg_kernel(channels, in_per_group, size, dtype=np.float64):
    """k x k average pooling of each channel as a conv kernel: ``1 / k^2`` over the window of
    ``[i, i % in_per_group]``, 0 elsewhere."""
    kernel = np.zeros((channels, in_per_group, size, size), dtype)
    kernel[np.arange(channels), np.arange(channels) % in_per_group] = 1.0 / (size * size)
    return kernel


def merge_sequential(k1, b1, k2, b2, groups=1):
    """A 1 x 1 conv (``k1``: (D, C/g, 1, 1), bias ``b1``) followed by a k x k conv (``k2``: (O, D/g, k, k),
    bias ``b2``), both in ``groups`` groups, as one (O, C/g, k, k) kernel and bias (float64).

    Within group j: ``K[o, c] = sum_d K2[o, d] K1[d, c]`` and ``b[o] = b2[o] + sum_{d,h,w} K2[o, d, h, w] b1[d]``.
    ``b1``/``b2`` may be ``None`` (zero).
    """
    k1, k2 = np.asarray(k1, np.float64), np.asarray(k2, np.float64)
    d, o = k1.shape[0], k2.shape[0]
    b1 = np.zeros(d) if b1 is None else np.asarray(b1, np.float64)
    b2 = np.zeros(o) if b2 is None else np.asarray(b2, np.float64)
    dg, og, (kh, kw), cg = d // groups, o // groups, k2.shape[2:], k1.shape[1]
    first = k1.reshape(groups, dg, cg)                                  # (g, D/g, C/g)
    second = k2.reshape(groups, og, dg, kh, kw)                         # (g, O/g, D/g, k, k)
    # the per-group products as one batched matrix product (BLAS; an einsum took ~25 s for 512 channels)
    kernel = np.matmul(second.transpose(0, 1, 3, 4, 2).reshape(groups, og * kh * kw, dg), first)
    kernel = kernel.reshape(groups, og, kh, kw, cg).transpose(0, 1, 4, 2, 3).reshape(o, cg, kh, kw)
    bias = np.matmul(second.sum(axis=(3, 4)), b1.reshape(groups, dg, 1)).reshape(o)
    return kernel, bias + b2


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


def scale_out(kernel, vector):
    """``kernel`` (O, ...) with output channel o scaled by ``vector[o]`` (float64)."""
    vector = np.asarray(vector, np.float64)
    return np.asarray(kernel, np.float64) * vector.reshape((-1,) + (1,) * (np.ndim(kernel) - 1))


#: OREPA's six branches, in the order of the rows of its vector
OREPA_BRANCHES = ("origin", "avg", "prior", "1x1_kxk", "1x1", "dws")


def fold_orepa(branches, vector, groups=1):
    """OREPA's generated kernel (the formula above), float64, from the branches present.

    ``branches``: ``{name: arrays}``, names from :data:`OREPA_BRANCHES`: ``origin`` (O, C/g, k, k);
    ``avg``, ``prior``, ``1x1`` (O, C/g, 1, 1): the 1 x 1 convs before the k x k averaging, before the
    prior filter, and the 1 x 1 branch; ``1x1_kxk`` ``(idconv1, conv2)``: the 1 x 1 conv (T, C/g, 1, 1),
    less the identity (``identity_kernel``), before ``conv2`` (O, T/g, k, k); ``dws`` ``(dw, pw)``:
    (M C, 1, k, k) and (O, M C/g, 1, 1).  ``vector``: one row of O scales per branch present, in
    :data:`OREPA_BRANCHES` order.
    """
    origin = np.asarray(branches["origin"], np.float64)
    o, cg, k = origin.shape[:3]

    def kernel_of(name, arrays):
        if name == "origin":
            return origin
        if name == "avg":
            return merge_1x1_filter(arrays, np.full((o, k, k), 1.0 / (k * k)))
        if name == "prior":
            return merge_1x1_filter(arrays, prior_filter(o, k))
        if name == "1x1":
            return embed_center(np.asarray(arrays, np.float64), k)
        if name == "1x1_kxk":
            first = np.asarray(arrays[0], np.float64) + identity_kernel(np.shape(arrays[0])[0], cg, 1)
            return merge_sequential(first, None, arrays[1], None, groups)[0]
        return merge_depthwise_pointwise(arrays[0], arrays[1], cg * groups, groups)

    present = [name for name in OREPA_BRANCHES if name in branches]
    return sum(scale_out(kernel_of(name, branches[name]), v) for name, v in zip(present, np.asarray(vector)))


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
