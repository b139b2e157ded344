"""Online Convolutional Re-parameterization (OREPA, Hu et al., CVPR 2022): one conv, its kernel generated."""
import numpy as np
from mindspore import Parameter, Tensor, ops
from mindspore.common import dtype as mstype

from .. import identities
from . import fold
from .spec import EXPAND, INITS, branch_names, branch_shapes, initial_arrays, internal_channels
from ..cell import ReparamBlock, keyword_options


def _f32(x):
    """``x`` as float32: mixed precision (O2/O3) may hand a product one float16 operand.  In graph mode the
    kernel is then generated in float32 whatever the level (and cast to the input's type); PyNative casts
    each op's inputs to the cell's type, so there it comes out in that type."""
    return ops.cast(x, mstype.float32)


#: the branches made of a 1 x 1 conv and a fixed k x k filter after it (computed together)
TAPS = ("avg", "prior", "1x1")


class OREPABlock(ReparamBlock):
    """A k x k conv trained as OREPA's linear branches, computed as ONE conv over a generated kernel.

    The kernel is rebuilt at every step from the branch parameters (no BN inside; a BN after the block
    is the model's own); with all six branches::

        K = v0 . origin + v1 . (avg o AvgPool_k) + v2 . (prior o F) + v3 . (conv2 o (idconv1 + I))
            + v4 . embed(1x1) + v5 . (pw o dw)

    ``.`` scales each output channel by its row of ``orepa_vector`` (a row per branch present, O
    scales each); ``F`` is the fixed frequency prior (:func:`acnet_ms.kinds.orepa.fold.prior_filter`); ``o``
    composes a 1 x 1 conv with what follows it (``acnet_ms.kinds.identities``'s OREPA section).  Being linear,
    this one conv has the function and the gradients of the explicit branches summed, with the conv's
    own geometry (stride, padding, pad mode, dilation, groups): every geometry is exact.  Every branch
    exists for any ``groups`` (as in the original): the 1x1-kxk branch's middle is ``in_channels``
    wide for groups <= 4 and twice that beyond (depthwise included), both its convs in the block's
    groups; the depthwise-separable branch expands each input channel 8 times, its 1 x 1 conv in the
    block's groups.

    Inference form (``deploy=True`` or after :meth:`switch_to_deploy`): ``fused_conv``, one k x k conv
    with the same geometry (a bias only if ``has_bias``).

    Args:
        padding: an int, ``(top, bottom, left, right)`` or ``None`` (keep the size at stride 1); ignored
            with ``pad_mode="same"``.
        branches: which branches (``acnet_ms.kinds.orepa.fold.OREPA_BRANCHES``; comma-separated or a list), origin
            always among them; ``None``: all six.
        init: ``"paper"`` or ``"single"``: the branch scales' start (``acnet_ms.kinds.orepa.spec.INITS``;
            the kind's ``auto`` picks one per site).
        internal: the 1x1-kxk branch's middle width (``None``: the original's rule).
    """

    kind = "orepa"
    info_fields = ("branches", "kernel_size", "in_channels", "out_channels", "groups", "internal", "expand",
                   "has_bias")
    repr_fields = ("branches", "internal", "init")

    @keyword_options("pad_mode", "has_bias", "branches", "init", "internal", "deploy", "seed")
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=None, dilation=1, groups=1, *,
                 pad_mode="pad", has_bias=False, branches=None, init="paper", internal=None, deploy=False,
                 seed=0):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         pad_mode=pad_mode, has_bias=has_bias, deploy=deploy)
        if init not in INITS:
            raise ValueError(f"OREPABlock: init must be one of {', '.join(INITS)}, got {init!r}")
        try:
            names = branch_names(branches)
        except ValueError as err:
            raise ValueError(f"OREPABlock: branches: {err}") from None
        internal = internal or internal_channels(in_channels, groups)
        if internal % groups:
            raise ValueError(f"OREPABlock: internal={internal} must be a multiple of groups={groups}")
        self.branches = ",".join(names)
        self.init, self.internal, self.expand, self.seed = init, internal, EXPAND, seed
        self.one_conv = True  # there is no branch form: the branches make one kernel
        self.build()

    def build_training(self):
        in_channels, out_channels, k, groups = self.in_channels, self.out_channels, self.kernel_size, self.groups
        shapes = branch_shapes(in_channels, out_channels, k, groups, self.branches, self.internal)
        for name, value in initial_arrays(shapes, self.init, self.seed).items():
            setattr(self, name, Parameter(Tensor(value), name=name))
        if self.has_bias:
            bound = 1.0 / np.sqrt(in_channels // groups * k ** 2)
            bias = np.random.default_rng(self.seed + 1).uniform(-bound, bound, out_channels).astype(np.float32)
            self.orepa_bias = Parameter(Tensor(bias), name="orepa_bias")
        # which row of the vector scales which branch (Python constants, so graph mode unrolls them)
        names = self.branches.split(",")
        rows = {name: i for i, name in enumerate(names)}
        self.taps = tuple(t for t in TAPS if t in rows)
        self.use_seq, self.use_dws = "1x1_kxk" in rows, "dws" in rows
        self.row_seq, self.row_dws = rows.get("1x1_kxk", 0), rows.get("dws", 0)
        # the fixed k x k filter after each tap's 1 x 1 conv, (taps, O, 1, k, k), and the row of the vector
        # that scales it; the identity the 1x1-kxk branch's first conv starts at
        centre = np.zeros(k * k)
        centre[(k * k) // 2] = 1.0
        filters = {"avg": np.full((out_channels, k * k), 1.0 / (k * k)),
                   "prior": fold.prior_filter(out_channels, k).reshape(out_channels, k * k),
                   "1x1": np.tile(centre, (out_channels, 1))}
        if self.taps:
            self.tap_rows = tuple(rows[t] for t in self.taps)
            self.tap_filters = Tensor(np.stack([filters[t].reshape(out_channels, 1, k, k) for t in self.taps])
                                      .astype(np.float32))
        if self.use_seq:
            self.identity = Tensor(identities.identity_kernel(self.internal, in_channels // groups, 1, np.float32))

    @classmethod
    def from_conv(cls, conv, branches=None, init="paper", seed=0):
        """An OREPA block in place of ``conv``, same geometry; the origin branch starts from ``conv``'s
        kernel (and the bias from its bias), the others from the original's initialisation."""
        kh, opts = cls.geometry_of(conv)
        block = cls(conv.in_channels, conv.out_channels, kh, has_bias=conv.has_bias, branches=branches, init=init,
                    seed=seed, **opts)
        block.orepa_origin.set_data(Tensor(conv.weight.asnumpy()))
        if conv.has_bias:
            block.orepa_bias.set_data(Tensor(conv.bias.asnumpy()))
        return block

    # ------------------------------------------------------------ the generated kernel

    def _scale(self, row):
        """Row ``row`` of the vector as (O, 1, 1, 1)."""
        return _f32(self.orepa_vector)[row].reshape(self.out_channels, 1, 1, 1)

    def _merged_taps(self):
        """The avg, prior and 1x1 branches, scaled: each one's (O, C/g, 1, 1) weight times its fixed
        (O, 1, k, k) filter, summed.

        Products and sums only, no concatenation: in PyNative under mixed precision (MindSpore 2.8) a
        concatenation of parameters hands them float16 gradients, which the optimizer cannot add to their
        float32 values ("For primitive[AddN], the input type must be same")."""
        merged = 0
        for i, row in enumerate(self.tap_rows):
            weight = _f32(getattr(self, "orepa_" + self.taps[i]))
            merged = merged + weight * (self.tap_filters[i] * self._scale(row))
        return merged

    def _merged_1x1_kxk(self):
        """conv2 o (idconv1 + I): (O, C/g, k, k), one (O/g k k x T/g) @ (T/g x C/g) product per group."""
        g, o, k = self.groups, self.out_channels, self.kernel_size
        t, cg, kk = self.internal // g, self.in_channels // g, self.kernel_size ** 2
        first = _f32(self.orepa_1x1_kxk_idconv1).reshape(self.internal, cg) + self.identity.reshape(self.internal, cg)
        second = _f32(self.orepa_1x1_kxk_conv2).reshape(g, o // g, t, kk).transpose(0, 1, 3, 2)  # (g, O/g, kk, T/g)
        if g == 1:
            merged = ops.matmul(second.reshape(o * kk, t), first)
        else:
            merged = ops.bmm(second.reshape(g, o // g * kk, t), first.reshape(g, t, cg))
        return merged.reshape(o, kk, cg).transpose(0, 2, 1).reshape(o, cg, k, k)

    def _merged_dws(self):
        """pw o dw: (O, C/g, k, k), one (O/g x M) @ (M x k k) product per input channel (its M depthwise
        kernels and the M columns of pw that read them)."""
        g, o, k, m, c = self.groups, self.out_channels, self.kernel_size, self.expand, self.in_channels
        cg = c // g
        dw = _f32(self.orepa_dw).reshape(c, m, k * k)
        pw = _f32(self.orepa_pw).reshape(g, o // g, cg, m).transpose(0, 2, 1, 3).reshape(c, o // g, m)
        merged = ops.bmm(pw, dw)                                                                    # (C, O/g, k k)
        return merged.reshape(g, cg, o // g, k * k).transpose(0, 2, 1, 3).reshape(o, cg, k, k)

    def conv_kernel(self):
        """The block's k x k kernel (a Tensor): its branches, each scaled per output channel."""
        kernel = _f32(self.orepa_origin) * self._scale(0)
        if self.taps:
            kernel = kernel + self._merged_taps()
        if self.use_seq:
            kernel = kernel + self._merged_1x1_kxk() * self._scale(self.row_seq)
        if self.use_dws:
            kernel = kernel + self._merged_dws() * self._scale(self.row_dws)
        return kernel

    def conv_bias(self):
        return self.orepa_bias
