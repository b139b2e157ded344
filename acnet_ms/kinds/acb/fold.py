"""ACB's fold (ACNet, Ding et al., ICCV 2019, Sec. 3.3), in pure numpy.

The three branches (k x k, 1 x k, k x 1; each conv + BN) become one k x k
conv: each BN folds into its conv (``fuse_bn``), the 1 x k and k x 1 kernels
are embedded on the centre row and column of the k x k window (or the bottom
row / right column for the paper's border variant, ``position="corner"``), and
the branches are summed.  No MindSpore here.
"""
import numpy as np

from ..identities import BN_EPS, embed, fuse_bn, sum_branches


#: names of the three branches of an ACB, as in the original ACNet
BRANCHES = ("square", "hor", "ver")

#: where the asymmetric kernels sit in the k x k window
POSITIONS = ("center", "corner")

#: values of an ACB's ``branches``: which asymmetric kernels it has besides the square one
BRANCH_SETS = {"hv": ("hor", "ver"), "h": ("hor",), "v": ("ver",)}


def asym_offsets(size, position="center"):
    """``(row, col)``: the row of the k x k window that the 1 x k kernel covers, and the
    column that the k x 1 kernel covers (centre: k // 2; corner: k - 1, the bottom
    row and the right column)."""
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {', '.join(POSITIONS)}, got {position!r}")
    return (size // 2, size // 2) if position == "center" else (size - 1, size - 1)


def embed_branch(branch, kernel, size, position="center"):
    """Place one ACB branch's kernel in the k x k window: the square one as it is,
    ``hor`` (1 x k) on row ``asym_offsets(...)[0]``, ``ver`` (k x 1) on column ``[1]``."""
    row, col = asym_offsets(size, position)
    top, left = {"square": (0, 0), "hor": (row, 0), "ver": (0, col)}[branch]
    return embed(kernel, size, top, left)


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
