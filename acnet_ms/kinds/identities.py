"""The linear identities every block kind folds with, in pure numpy.

Each is a small function a reader can check against its formula; the kinds'
own folds (``kinds/<kind>/fold.py``) compose them, and the Cells and the
checkpoint converter call the same functions:

    BN fold      BN(K * x) = (K * t) * x + (beta - mu * t),  t = gamma / sqrt(var + eps)
    embedding    a smaller kernel is a k x k kernel that is zero outside its rows and columns
                 (embed_center: the centred ones)
    branch sum   sum_i (K_i * x + b_i) = (sum_i K_i) * x + sum_i b_i
                 (valid when all branches share stride and the positions of their sampling windows)
    identity     x = I * x,          I[i, i mod (C/g), c, c] = 1 (c = k // 2)
    average      k x k average pooling of each channel = A * x,
                 A[i, i mod (C/g), :, :] = 1 / k^2 (padding counts as zeros)
    sequential   K2 * (K1 * x + b1) + b2 = (K2 o K1) * x + (b2 + sum_{d,h,w} K2[o,d,h,w] b1[d]),
                 K1 1 x 1, K2 k x k, within each of g groups; exact when K2's padding carries b1
    scale        a per-output-channel scale of a kernel

Arithmetic runs in float64; results come back in the dtype of the input
kernel.  No kind is named here.  This module must not import MindSpore.
"""
import numpy as np

#: epsilon of a BatchNorm2d unless the model says otherwise (MindSpore's default)
BN_EPS = 1e-5

#: the four arrays of a MindSpore BatchNorm cell
BN_FIELDS = ("gamma", "beta", "moving_mean", "moving_variance")


def fuse_bn(kernel, gamma, beta, mean, var, eps=BN_EPS):
    """Fold a BatchNorm (inference form) into the convolution before it.

    Returns ``(kernel * t, beta - mean * t)`` with ``t = gamma / sqrt(var + eps)``
    broadcast over the output-channel axis 0 of ``kernel``.
    """
    t = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    k = np.asarray(kernel, np.float64) * t.reshape((-1,) + (1,) * (np.ndim(kernel) - 1))
    b = np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * t
    return k, b


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


def sum_branches(pairs):
    """Sum (kernel, bias) pairs of branches that share their sampling grid."""
    kernels, biases = zip(*pairs)
    return sum(kernels), sum(biases)


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


def scale_out(kernel, vector):
    """``kernel`` (O, ...) with output channel o scaled by ``vector[o]`` (float64)."""
    vector = np.asarray(vector, np.float64)
    return np.asarray(kernel, np.float64) * vector.reshape((-1,) + (1,) * (np.ndim(kernel) - 1))
