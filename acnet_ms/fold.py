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
