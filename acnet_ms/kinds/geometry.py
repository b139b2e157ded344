"""Where a branch's sliding window sits, for blocks whose branches must sample the square conv's grid.

A k x k conv with padding (top, bottom, left, right), stride s and dilation d
reads, for output pixel (i, j), the input rows ``i*s - top + d*r`` for
r = 0..k-1.  A branch whose kernel (kh x kw) covers rows ``row..row+kh-1`` and
columns ``col..col+kw-1`` of that window reads the same rows if it pads by
``top - d*row`` (and ``bottom - d*(k - row - kh)``, likewise for columns); a
negative amount means cropping that many rows off the input instead
(:func:`sub_window`).  Every branch then has the square conv's output size
and grid, which is what lets the kernels be summed.

:class:`ConvGeometry` is the geometry of one conv, what every conv the package builds or rebuilds is made from.
"""
from dataclasses import dataclass, replace
from typing import Tuple

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


@dataclass(frozen=True)
class ConvGeometry:
    """The geometry of a 2-d conv: channels, kernel ``(kh, kw)``, stride and dilation pairs, padding (top,
    bottom, left, right; 0 for MindSpore's ``pad_mode`` "same" and "valid"), groups, pad mode, bias.

    :meth:`of` reads it off an ``nn.Conv2d``; :meth:`conv` builds a new ``nn.Conv2d`` of it (fresh weights):
    the one "rebuild a conv like this" of the package (a deploy conv, a conv that takes a BN's bias, a
    block's one-conv form).  :meth:`block_args` are a re-parameterizable block's keyword arguments for it.
    """
    in_channels: int
    out_channels: int
    kernel_size: Tuple[int, int]
    stride: Tuple[int, int] = (1, 1)
    padding: Tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: Tuple[int, int] = (1, 1)
    groups: int = 1
    pad_mode: str = "pad"
    has_bias: bool = False

    @classmethod
    def of(cls, conv):
        """The geometry of ``conv`` (an ``nn.Conv2d``)."""
        padding = conv.padding if isinstance(conv.padding, (tuple, list)) else (conv.padding,) * 4
        return cls(conv.in_channels, conv.out_channels, tuple(conv.kernel_size), tuple(conv.stride[-2:]),
                   tuple(padding), tuple(conv.dilation[-2:]), conv.group, conv.pad_mode, bool(conv.has_bias))

    def replace(self, **changes):
        """This geometry with ``changes`` (its field names)."""
        return replace(self, **changes)

    def conv(self, has_bias=None):
        """A new ``nn.Conv2d`` of this geometry (``has_bias``: instead of the geometry's own)."""
        bias = self.has_bias if has_bias is None else bool(has_bias)
        padding = {"padding": self.padding} if self.pad_mode == "pad" else {}
        return nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
                         pad_mode=self.pad_mode, dilation=self.dilation, group=self.groups, has_bias=bias, **padding)

    def block_args(self):
        """``(kernel_size, keywords)``: a square conv's geometry as a re-parameterizable block's arguments
        (:class:`acnet_ms.kinds.cell.ReparamBlock`); ValueError for a kernel that is not square."""
        kh, kw = self.kernel_size
        if kh != kw:
            raise ValueError(f"kernel {kh}x{kw} is not square")
        return kh, dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups,
                        pad_mode=self.pad_mode)


def conv_like(conv, has_bias):
    """A new ``nn.Conv2d`` with ``conv``'s geometry and a bias or not (:meth:`ConvGeometry.conv`): where a
    fold goes in a model (the conv that takes a BN's bias, a deploy conv)."""
    return ConvGeometry.of(conv).conv(has_bias)


def block_conv(block, has_bias):
    """A plain k x k conv in ``block``'s own geometry (``block.conv_geometry``, :class:`ConvGeometry`):
    MindSpore's ``pad_mode="same"`` if ``block.same``, else its explicit padding.  What a block trains as one
    conv over a generated kernel, and what it deploys to."""
    return block.conv_geometry.conv(has_bias)


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
