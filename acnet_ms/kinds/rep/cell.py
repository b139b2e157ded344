"""RepVGG / MobileOne-style block (Ding et al., CVPR 2021; Vasu et al., CVPR 2023).

A k x k conv (+ BN) trained as ``num_kxk`` parallel k x k conv-BN branches, a
1 x 1 conv-BN branch (MobileOne's "scale" branch) and, where the conv keeps
the input's shape and grid, an identity BN branch; deployed as one conv.  A
1 x 1 conv (MobileOne's pointwise convs) gets ``num_kxk`` parallel 1 x 1
branches and the identity, no separate scale branch.  The arithmetic is
:func:`acnet_ms.kinds.rep.fold.fold_rep`.
"""
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from .. import identities
from . import fold
from .. import geometry
from ..cell import Kernel


def check_kernel_size(kernel_size):
    """A rep block's kernel is square and odd (the 1 x 1 and identity branches sit on its centre tap)."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"RepBlock: kernel_size must be an odd integer >= 1, got {kernel_size!r}")


def keeps_grid(in_channels, out_channels, kernel_size, stride, pads, dilation, same):
    """Whether ``y = x`` is a branch of this conv: as many channels out as in, stride 1, and output pixel
    (i, j) centred on input pixel (i, j) with the input's size (padding ``dilation * (k // 2)`` on every
    side, or MindSpore's 'same', which at stride 1 is that padding)."""
    if in_channels != out_channels or tuple(stride) != (1, 1):
        return False
    c = kernel_size // 2
    return bool(same) or tuple(pads) == (dilation[0] * c,) * 2 + (dilation[1] * c,) * 2


class Branch(nn.Cell):
    """One branch: ``conv`` then ``bn`` (if any).  In the BN-free form ``conv`` is a :class:`Kernel`
    (parameters only) and the branch is not called."""

    def __init__(self, conv, bn=None):
        super().__init__()
        self.conv = conv
        self.has_bn = bn is not None
        if bn is not None:
            self.bn = bn

    def construct(self, x):
        if self.has_bn:
            return self.bn(self.conv(x))
        return self.conv(x)


class RepBlock(nn.Cell):
    """k x k conv + BN, trained as parallel k x k, 1 x 1 and identity branches, deployed as one conv.

    Training form with branch BNs (``branch_bn=True``): ``dense[i]`` (``conv``
    k x k + ``bn``) for i < ``num_kxk``, ``scale`` (1 x 1 conv + BN; k > 1 and
    ``scale=True``) and ``identity_bn`` (a BN of the input; ``identity=True``
    and :func:`keeps_grid`); the output is their sum.  The 1 x 1 conv reads the
    centre tap of the k x k window for every stride, dilation, groups and
    padding: it pads by the square conv's padding less ``dilation * (k // 2)``
    and, where that is negative, crops the input instead (``geometry.sub_window``).
    With ``pad_mode="same"`` the input is padded explicitly first (MindSpore's
    amounts, from its size), the identity reading the unpadded input.

    Training form without branch BNs (``branch_bn=False``): the branches are
    linear, so the block runs as ONE conv over ``sum_i dense[i] + centred scale
    + identity kernel``, rebuilt at every step from the parameters (the
    identity adds x itself, no parameter).  ``has_bias`` adds a bias
    (``dense[0].conv.bias``) to that form.

    Inference form (``deploy=True`` or after :meth:`switch_to_deploy`): one
    conv ``fused_conv`` with the block's geometry, with a bias unless the
    block has neither BN nor bias.

    Args:
        padding: an int, ``(top, bottom, left, right)``, or ``None`` (keep the size at stride 1); ignored
            with ``pad_mode`` ``same`` / ``valid``.
        num_kxk: how many parallel k x k branches (MobileOne's ``num_conv_branches``).
        scale, identity: whether the 1 x 1 branch / the identity branch (where the geometry allows) exist.
        eps, momentum: those of the branch BNs.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=None, dilation=1, groups=1,
                 num_kxk=1, scale=True, identity=True, branch_bn=True, pad_mode="pad", has_bias=False,
                 eps=identities.BN_EPS, momentum=0.9, deploy=False):
        super().__init__()
        check_kernel_size(kernel_size)
        if isinstance(num_kxk, bool) or not isinstance(num_kxk, int) or num_kxk < 1:
            raise ValueError(f"RepBlock: num_kxk must be an integer >= 1, got {num_kxk!r}")
        stride = geometry.pair(stride, "stride", "RepBlock")
        dilation = geometry.pair(dilation, "dilation", "RepBlock")
        if pad_mode not in ("pad", "valid", "same"):
            raise ValueError(f"RepBlock: pad_mode must be pad, valid or same, got {pad_mode!r}")
        pads = geometry.pads_of(0 if pad_mode == "valid" else padding, kernel_size, dilation, "RepBlock")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"RepBlock: groups={groups} must divide in_channels={in_channels} "
                             f"and out_channels={out_channels}")
        if has_bias and branch_bn:
            raise ValueError("RepBlock: has_bias needs branch_bn=False (branch BNs carry the bias)")
        k = kernel_size
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, k
        self.stride, self.dilation, self.groups = stride, dilation, groups
        self.same = pad_mode == "same"
        self.pad_mode = "pad" if pad_mode == "valid" else pad_mode
        self.padding = (0, 0, 0, 0) if self.same else pads
        self.num_kxk, self.branch_bn, self.has_bias, self.eps = num_kxk, bool(branch_bn), bool(has_bias), float(eps)
        self.has_scale = bool(scale) and k > 1
        self.has_identity = bool(identity) and keeps_grid(in_channels, out_channels, k, stride, pads, dilation,
                                                          self.same)
        self.deploy = deploy
        self.scale_crop, self.crop_scale = (0, 0, 0, 0), False
        per_group = in_channels // groups
        if deploy:
            self.fused_conv = geometry.block_conv(self, self.has_bias or self.branch_bn)
            return
        if not self.branch_bn:
            native = geometry.block_conv(self, self.has_bias)
            self.conv2d, self.bias_add = native.conv2d, native.bias_add
            self.dense = nn.CellList([Branch(Kernel(out_channels, per_group, (k, k), self.has_bias and i == 0))
                                      for i in range(num_kxk)])
            if self.has_scale:
                self.scale = Branch(Kernel(out_channels, per_group, (1, 1)))
            if self.has_identity:
                self.identity_kernel = Tensor(identities.identity_kernel(out_channels, per_group, k, np.float32))
            return

        def bn():
            return nn.BatchNorm2d(out_channels, eps=eps, momentum=momentum)

        self.dense = nn.CellList([Branch(self._conv((k, k), self.padding, dilation), bn()) for _ in range(num_kxk)])
        if self.has_scale:
            pads, self.scale_crop = geometry.sub_window(self.padding, k, dilation, k // 2, k // 2, 1, 1)
            self.crop_scale = any(self.scale_crop)
            self.scale = Branch(self._conv((1, 1), pads, (1, 1)), bn())
        if self.has_identity:
            self.identity_bn = bn()

    # ------------------------------------------------------------ construction helpers

    def _conv(self, kernel, padding, dilation, has_bias=False):
        return nn.Conv2d(self.in_channels, self.out_channels, kernel, stride=self.stride, pad_mode="pad",
                         padding=padding, dilation=dilation, group=self.groups, has_bias=has_bias)


    @classmethod
    def from_conv(cls, conv, bn=None, num_kxk=1, scale=True, identity=True, branch_bn=True, gamma_init=None, seed=0):
        """A rep block in place of ``conv`` (and of ``bn`` after it, if given), same geometry.

        The first k x k branch starts from ``conv``'s kernel (and ``bn``'s gamma
        and beta); the other kernels are drawn from N(0, s^2 m), s the kernel's
        standard deviation and m how many times fewer taps they have (1 for
        k x k, k^2 for the 1 x 1).  ``gamma_init``: every branch BN's initial
        gamma (ACNet's CIFAR recipe, by analogy: 1 / the number of branches keeps
        the sum at the plain conv's scale); ``None`` keeps ``bn``'s gamma and beta
        in the first branch and 1 in the others.
        """
        kh, kw = conv.kernel_size
        if kh != kw:
            raise ValueError(f"RepBlock.from_conv: kernel {kh}x{kw} is not square")
        padding = conv.padding if isinstance(conv.padding, tuple) else (conv.padding,) * 4
        opts = dict(stride=tuple(conv.stride[-2:]), padding=tuple(padding), dilation=tuple(conv.dilation[-2:]),
                    groups=conv.group, pad_mode=conv.pad_mode, num_kxk=num_kxk, scale=scale, identity=identity,
                    branch_bn=branch_bn)
        if bn is not None and branch_bn:
            opts.update(eps=bn.eps, momentum=1.0 - bn.momentum)
        if not branch_bn:
            opts["has_bias"] = conv.has_bias
        block = cls(conv.in_channels, conv.out_channels, kh, **opts)
        kernel = conv.weight.asnumpy()
        first = block.dense[0]
        first.conv.weight.set_data(Tensor(kernel))
        if block.has_bias:
            first.conv.bias.set_data(Tensor(conv.bias.asnumpy()))
        rng = np.random.default_rng(seed)
        std = float(kernel.std()) or 1e-2
        others = [(b.conv.weight, 1) for b in list(block.dense)[1:]]
        if block.has_scale:
            others.append((block.scale.conv.weight, kh))
        for weight, spread in others:
            weight.set_data(Tensor(rng.normal(0.0, std * spread, weight.shape).astype(kernel.dtype)))
        if block.branch_bn and gamma_init is not None:
            for norm in block.branch_bns():
                norm.gamma.set_data(Tensor(np.full(norm.gamma.shape, gamma_init, np.float32)))
        elif bn is not None and branch_bn:
            for field in ("gamma", "beta"):
                getattr(first.bn, field).set_data(Tensor(getattr(bn, field).asnumpy()))
        return block

    def branch_bns(self):
        """The BNs of the branches (training form with branch BNs), the identity's included."""
        norms = [b.bn for b in self.dense] + ([self.scale.bn] if self.has_scale else [])
        return norms + ([self.identity_bn] if self.has_identity else [])

    # ------------------------------------------------------------ forward

    def _pad_same(self, x):
        """Pad as MindSpore's 'same' does: output ceil(size / stride), the odd row/column at the end."""
        return geometry.pad_zeros(x, geometry.same_pads(x.shape[2], x.shape[3], self.kernel_size, self.stride,
                                                        self.dilation))

    def summed_kernel(self):
        """The k x k kernel of the BN-free form: the k x k kernels, the 1 x 1 one on the centre tap and the
        identity (a Tensor)."""
        w = self.dense[0].conv.weight
        for i in range(1, self.num_kxk):
            w = w + self.dense[i].conv.weight
        if self.has_scale:
            c = self.kernel_size // 2
            w = w + geometry.pad_zeros(self.scale.conv.weight, (c, c, c, c))
        if self.has_identity:
            w = w + ops.cast(self.identity_kernel, w.dtype)
        return w

    def construct(self, x):
        if self.deploy:
            return self.fused_conv(x)
        if not self.branch_bn:
            # built here, outside any conv cell, so mixed precision does not cast it: it takes the input's type
            out = self.conv2d(x, ops.cast(self.summed_kernel(), x.dtype))
            if self.has_bias:
                out = self.bias_add(out, ops.cast(self.dense[0].conv.bias, out.dtype))
            return out
        padded = self._pad_same(x) if self.same else x
        out = self.dense[0](padded)
        for i in range(1, self.num_kxk):
            out = out + self.dense[i](padded)
        if self.has_scale:
            out = out + self.scale(geometry.crop(padded, self.scale_crop) if self.crop_scale else padded)
        if self.has_identity:
            out = out + self.identity_bn(x)
        return out

    # ------------------------------------------------------------ re-parameterisation

    def branch_arrays(self):
        """``(dense, scale, identity)`` as :func:`fold.fold_rep` takes them (numpy arrays)."""
        def arrays(branch):
            if not self.branch_bn:
                return (branch.conv.weight.asnumpy(),)
            return (branch.conv.weight.asnumpy(),) + tuple(getattr(branch.bn, f).asnumpy() for f in identities.BN_FIELDS)

        dense = [arrays(b) for b in self.dense]
        scale = arrays(self.scale) if self.has_scale else None
        identity = None
        if self.has_identity:
            identity = tuple(getattr(self.identity_bn, f).asnumpy() for f in identities.BN_FIELDS) if self.branch_bn else ()
        return dense, scale, identity

    def get_equivalent_kernel_bias(self):
        """The single conv's (kernel, bias) that equals this block in eval mode, as numpy arrays
        (bias ``None`` for a block with neither BN nor bias)."""
        if self.deploy:
            bias = self.fused_conv.bias.asnumpy() if self.fused_conv.has_bias else None
            return self.fused_conv.weight.asnumpy(), bias
        bias = self.dense[0].conv.bias.asnumpy() if self.has_bias else None
        return fold.fold_rep(*self.branch_arrays(), eps=self.eps, bias=bias)

    def reparam_info(self):
        """What a converter needs besides the parameters to fold this block (JSON-able)."""
        return dict(kind="rep", kernel_size=self.kernel_size, num_kxk=self.num_kxk, has_scale=self.has_scale,
                    has_identity=self.has_identity, branch_bn=self.branch_bn, has_bias=self.has_bias, eps=self.eps)

    def switch_to_deploy(self):
        """Replace the branches by ``fused_conv`` in place (no-op when already switched)."""
        if self.deploy:
            return
        kernel, bias = self.get_equivalent_kernel_bias()
        conv = geometry.block_conv(self, bias is not None)
        conv.weight = Parameter(Tensor(kernel), name="fused_conv.weight")
        if bias is not None:
            conv.bias = Parameter(Tensor(bias), name="fused_conv.bias")
        for name in ("dense", "scale", "identity_bn", "identity_kernel"):
            if hasattr(self, name):
                delattr(self, name)
        self.fused_conv = conv
        self.deploy = True

    def extend_repr(self):
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"pad_mode={self.pad_mode}, dilation={self.dilation}, groups={self.groups}, num_kxk={self.num_kxk}, "
                f"scale={self.has_scale}, identity={self.has_identity}, branch_bn={self.branch_bn}, "
                f"deploy={self.deploy}")
