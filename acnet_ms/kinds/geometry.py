"""Where a branch's sliding window sits, for blocks whose branches must sample the square conv's grid.

A k x k conv with padding (top, bottom, left, right), stride s and dilation d
reads, for output pixel (i, j), the input rows ``i*s - top + d*r`` for
r = 0..k-1.  A branch whose kernel (kh x kw) covers rows ``row..row+kh-1`` and
columns ``col..col+kw-1`` of that window reads the same rows if it pads by
``top - d*row`` (and ``bottom - d*(k - row - kh)``, likewise for columns); a
negative amount means cropping that many rows off the input instead
(:func:`sub_window`).  Every branch then has the square conv's output size
and grid, which is what lets the kernels be summed.
"""
import numpy as np
from mindspore import Tensor, nn, ops


def pair(value, what, owner="block"):
    """``(a, b)`` from an int or a pair of positive ints; ValueError naming ``what``."""
    out = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(out) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in out):
        raise ValueError(f"{owner}: {what} must be a positive integer or a pair of them, got {value!r}")
    return out


def pads_of(padding, size, dilation, owner="block"):
    """(top, bottom, left, right) from an int, a 4-tuple, or ``None`` (keep the size at stride 1)."""
    if padding is None:
        return (dilation[0] * (size // 2),) * 2 + (dilation[1] * (size // 2),) * 2
    pads = tuple(padding) if isinstance(padding, (tuple, list)) else (padding,) * 4
    if len(pads) != 4 or any(isinstance(p, bool) or not isinstance(p, int) or p < 0 for p in pads):
        raise ValueError(f"{owner}: padding must be an integer >= 0 or four of them, got {padding!r}")
    return pads


def same_pads(height, width, size, stride, dilation):
    """MindSpore's ``pad_mode="same"`` as explicit (top, bottom, left, right): output ceil(input / stride),
    the odd row/column at the bottom/right."""
    out = []
    for n, s, d in zip((height, width), stride, dilation):
        total = max(0, ((n + s - 1) // s - 1) * s + d * (size - 1) + 1 - n)
        out += [total // 2, total - total // 2]
    return tuple(out)


def sub_window(pads, size, dilation, row, col, kh, kw):
    """``(pads, crop)`` of a branch whose kh x kw kernel covers rows ``row..`` and columns ``col..`` of the
    square conv's k x k window (see the module's docstring); both (top, bottom, left, right)."""
    t, b, l, r = pads
    dh, dw = dilation
    want = (t - dh * row, b - dh * (size - row - kh), l - dw * col, r - dw * (size - col - kw))
    return tuple(max(0, p) for p in want), tuple(max(0, -p) for p in want)


def conv_like(conv, has_bias):
    """A new ``nn.Conv2d`` with ``conv``'s geometry (channels, kernel, stride, padding and its mode, dilation,
    groups) and a bias or not: where a fold goes in a model (the conv that takes a BN's bias, a deploy conv)."""
    return nn.Conv2d(conv.in_channels, conv.out_channels, tuple(conv.kernel_size), stride=tuple(conv.stride[-2:]),
                     pad_mode=conv.pad_mode, padding=conv.padding, dilation=tuple(conv.dilation[-2:]),
                     group=conv.group, has_bias=has_bias)


def block_conv(block, has_bias):
    """A plain k x k conv in ``block``'s own geometry: its ``in_channels``, ``out_channels``,
    ``kernel_size``, ``stride``, ``dilation`` and ``groups``, and MindSpore's ``pad_mode="same"`` if
    ``block.same``, else its explicit ``padding`` (top, bottom, left, right).  What a block trains as one
    conv over a generated kernel, and what it deploys to."""
    k = block.kernel_size
    common = dict(stride=block.stride, dilation=block.dilation, group=block.groups, has_bias=has_bias)
    if block.same:
        return nn.Conv2d(block.in_channels, block.out_channels, k, pad_mode="same", **common)
    return nn.Conv2d(block.in_channels, block.out_channels, k, pad_mode="pad", padding=block.padding, **common)


def centre_tap(size):
    """A (1, 1, size, size) float32 Tensor, 1 at the centre tap and 0 elsewhere: a (O, I, 1, 1) kernel times it
    is that kernel on the centre tap of a size x size one.

    A product with a constant rather than a pad: it reads no shape while it runs, which PyNative under
    mixed precision (MindSpore 2.8) fails on for a concatenation's output ("The pointer[...] is null").
    """
    mask = np.zeros((1, 1, size, size), np.float32)
    mask[0, 0, size // 2, size // 2] = 1.0
    return Tensor(mask)


def crop(x, amounts):
    """``x`` (N, C, H, W) without ``amounts`` = (top, bottom, left, right) rows/columns."""
    t, b, l, r = amounts
    return x[:, :, t:(-b or None), l:(-r or None)]  # no shape read (see pad_zeros)


def _zeros_from(x, n, size, axis):
    """``n`` zero rows (``axis`` 2) or columns (3) shaped and typed like ``x``'s, made from ``x`` itself
    (``size``: x's length along ``axis``, not read here).  Zeros made by ``ops.zeros`` or ``zeros_like`` and
    concatenated to ``x`` gave the next conv a null device pointer in PyNative under mixed precision
    (MindSpore 2.8: every branch form with 'same' padding, EfficientNet's convs); a product with 0 does not."""
    if n <= size:
        part = x[:, :, :n] if axis == 2 else x[:, :, :, :n]
    else:
        part = ops.tile(x[:, :, :1] if axis == 2 else x[:, :, :, :1], (1, 1, n, 1) if axis == 2 else (1, 1, 1, n))
    return part * 0


def _zeros_beside(x, shape, before, after, axis):
    """``x`` between ``before`` and ``after`` zeros along ``axis``; ``shape`` is x's own (never read here)."""
    parts = ([_zeros_from(x, before, shape[axis], axis)] if before else []) + [x]
    if after:
        parts.append(_zeros_from(x, after, shape[axis], axis))
    return ops.concat(parts, axis) if len(parts) > 1 else x


def pad_zeros(x, pads):
    """``x`` padded with zeros by (top, bottom, left, right).

    Zeros are concatenated rather than ``ops.pad``-ed: the latter's backward
    stalled MindSpore 2.8's CPU graph inside whole models.  The shape is read
    from ``x`` once, never from the concatenation made of it: PyNative under
    mixed precision (MindSpore 2.8) can fail reading a concatenation's shape
    ("The pointer[...] is null"); the zeros are made from ``x``
    (:func:`_zeros_from`).
    """
    t, b, l, r = pads
    n, c, h, w = x.shape
    if t or b:
        x = _zeros_beside(x, (n, c, h, w), t, b, 2)
    if l or r:
        x = _zeros_beside(x, (n, c, h + t + b, w), l, r, 3)
    return x


def pad_with(x, pads, value):
    """``x`` padded by (top, bottom, left, right) with ``value`` per channel (a (C,) tensor):
    the border holds ``value[c]`` in channel c, the inside is ``x``."""
    if not any(pads):
        return x
    v = value.reshape((1, -1, 1, 1)).astype(x.dtype)
    return pad_zeros(x - v, pads) + v
