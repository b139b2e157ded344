"""The kernels the original PyTorch blocks compute, from their state-dict entries, in pure numpy.

Each reader takes a PyTorch state dict (name -> numpy array, PyTorch's BN field names) and the prefix of
one conv site, and returns a :class:`Unit`: the site's kernel and either the BN after it (four arrays,
MindSpore's order) or a bias, with the entries it read.  Where an original computes what one of our
identities computes (:mod:`acnet_ms.kinds.identities`, a kind's ``fold``), that identity is used; where
it differs, the difference is written here, as the original's own code computes it:

* OREPA's depthwise-separable branch in a grouped conv (``dwsc2full`` with ``groups_conv > 1``) reads
  its pointwise rows in the order ``a g + c`` for output ``c O/g + a`` (a ``view`` of the (O, M C/g)
  matrix as (O/g, g, C/g, M)); with one group it is :func:`merge_depthwise_pointwise`;
* OREPA's large-kernel stem (``OREPA_LargeConv``) chains its 3 x 3 generated kernels by a
  cross-correlation with padding 2 of the transposed kernel (:func:`chain_large_kernel`);
* OREPA's 1 x 1 block (``OREPA_1x1``): two branches, the kernel and a product of two 1 x 1 matrices;
* the fixed buffers the originals store (OREPA's averaging filter, frequency prior and identity) are
  read from the file rather than recomputed.

This module must not import MindSpore.
"""
from dataclasses import dataclass, field

import numpy as np

from ...kinds import identities
from ...kinds.orepa.fold import fold_orepa, merge_depthwise_pointwise

#: PyTorch's BatchNorm fields, in MindSpore's order (gamma, beta, moving_mean, moving_variance)
TORCH_BN = ("weight", "bias", "running_mean", "running_var")


@dataclass
class Unit:
    """One conv site of an original: ``kernel``, then ``bn`` (gamma, beta, mean, var) or ``bias`` (or neither);
    ``form``: which block the entries were (``convbn``, ``dbb``, ``orepa``, ``deploy``, ...)."""
    kernel: np.ndarray
    bn: tuple = None
    bias: np.ndarray = None
    form: str = "conv"
    consumed: list = field(default_factory=list)
    #: a block's own entries (names after its prefix, PyTorch's), where a kind of ours has the same branches
    raw: dict = None


class MapError(ValueError):
    """An entry the map cannot place: the message names it."""


def _f64(a):
    return np.asarray(a, np.float64)


class Reader:
    """Reads entries of one state dict, remembering which it used."""

    def __init__(self, state):
        self.state = state
        self.used = set()

    def has(self, name):
        return name in self.state

    def get(self, name):
        if name not in self.state:
            raise MapError(f"entry '{name}' is missing")
        self.used.add(name)
        return self.state[name]

    def bn(self, prefix):
        """The BN at ``prefix`` as (gamma, beta, mean, var); ``num_batches_tracked`` is read and dropped."""
        if self.has(f"{prefix}.num_batches_tracked"):
            self.used.add(f"{prefix}.num_batches_tracked")
        return tuple(self.get(f"{prefix}.{f}") for f in TORCH_BN)

    def is_bn(self, prefix):
        return self.has(f"{prefix}.running_mean")


# ---------------------------------------------------------------- OREPA


def orepa_dws(dw, pw, in_channels, groups):
    """OREPA's depthwise-separable branch ``dwsc2full(dw, pw, in_channels, groups)`` as one kernel."""
    return merge_depthwise_pointwise(dw, _grouped_pw(pw, groups), in_channels, groups)


def _grouped_pw(pw, groups):
    """The original's view of a grouped pointwise matrix in our order: its output c O/g + a takes pw row a g + c."""
    pw = _f64(pw)
    if groups > 1:
        o = pw.shape[0]
        pw = pw.reshape(o // groups, groups, *pw.shape[1:]).swapaxes(0, 1).reshape(pw.shape)
    return pw


def orepa_kernel(r, p, names):
    """The kernel ``weight_gen`` of an OREPA block (``names``: its parameter names, ``OREPA`` or
    ``OREPA_3x3_RepVGG``'s) at prefix ``p``: the kind's formula (:func:`fold_orepa`) with the buffers the file
    stores (averaging filter, prior, identity) and its depthwise-separable branch's groups."""
    origin = _f64(r.get(f"{p}.{names['origin']}"))
    out, cg, k = origin.shape[:3]
    fixed = dict(avg=np.broadcast_to(_f64(r.get(f"{p}.{names['avg_filter']}")), (out, k, k)),
                 prior=_f64(r.get(f"{p}.{names['prior_filter']}")))
    if r.has(f"{p}.{names['idconv1']}"):  # the first conv is the stored identity plus its learnt delta
        first = r.get(f"{p}.{names['idconv1']}")
        if r.has(f"{p}.id_tensor"):
            fixed["identity"] = _f64(r.get(f"{p}.id_tensor"))
    else:                                   # or a conv of its own
        first = r.get(f"{p}.{names['conv1']}")
        fixed["identity"] = 0.0
    second = r.get(f"{p}.{names['conv2']}")
    groups = np.shape(first)[0] // np.shape(second)[1]
    branches = {"origin": origin, "avg": r.get(f"{p}.{names['avg']}"), "prior": r.get(f"{p}.{names['prior']}"),
                "1x1_kxk": (first, second)}
    if names.get("1x1") and r.has(f"{p}.{names['1x1']}"):
        branches["1x1"] = r.get(f"{p}.{names['1x1']}")
    dws_groups = groups if names.get("grouped_dws") else 1
    branches["dws"] = (r.get(f"{p}.{names['dw']}"), _grouped_pw(r.get(f"{p}.{names['pw']}"), dws_groups))
    return fold_orepa(branches, _f64(r.get(f"{p}.vector")), groups, fixed, dws_groups)


#: the parameter names of OREPA's k x k block (``blocks.OREPA``)
OREPA_NAMES = dict(origin="weight_orepa_origin", avg="weight_orepa_avg_conv", avg_filter="weight_orepa_avg_avg",
                   prior="weight_orepa_pfir_conv", prior_filter="weight_orepa_prior",
                   idconv1="weight_orepa_1x1_kxk_idconv1", conv1="weight_orepa_1x1_kxk_conv1",
                   conv2="weight_orepa_1x1_kxk_conv2", dw="weight_orepa_gconv_dw", pw="weight_orepa_gconv_pw",
                   grouped_dws=True, **{"1x1": "weight_orepa_1x1"})
#: the parameter names of the k x k branch of OREPA's RepVGG block (``blocks_repvgg.OREPA_3x3_RepVGG``; its
#: depthwise-separable branch ignores groups, and it has no 1 x 1 branch: the block has one beside it)
OREPA_VGG_NAMES = dict(origin="weight_rbr_origin", avg="weight_rbr_avg_conv", avg_filter="weight_rbr_avg_avg",
                       prior="weight_rbr_pfir_conv", prior_filter="weight_rbr_prior",
                       idconv1="weight_rbr_1x1_kxk_idconv1", conv1="weight_rbr_1x1_kxk_conv1",
                       conv2="weight_rbr_1x1_kxk_conv2", dw="weight_rbr_gconv_dw", pw="weight_rbr_gconv_pw")


def orepa_1x1_kernel(r, p):
    """``OREPA_1x1.weight_gen``: v0 . W + v1 . (conv2 o conv1), all 1 x 1."""
    vector = _f64(r.get(f"{p}.vector"))
    origin = _f64(r.get(f"{p}.weight_or1x1_origin"))
    product = identities.merge_sequential(r.get(f"{p}.weight_or1x1_l2i_conv1"), None,
                                    r.get(f"{p}.weight_or1x1_l2i_conv2"), None)[0]
    return identities.scale_out(origin, vector[0]) + identities.scale_out(product, vector[1])


def correlate(x, w, padding, groups=1):
    """PyTorch's ``F.conv2d(x, w, padding=padding, groups=groups)`` (a cross-correlation), float64."""
    x, w = _f64(x), _f64(w)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ho, wo = h + 2 * padding - kh + 1, wd + 2 * padding - kw + 1
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))   # (n, c, ho, wo, kh, kw)
    windows = windows.reshape(n, groups, c // groups, ho, wo, kh, kw)
    w = w.reshape(groups, o // groups, cg, kh, kw)
    return np.einsum("ngcyxij,gocij->ngoyx", windows, w, optimize=True).reshape(n, o, ho, wo)


def chain_large_kernel(kernels, groups=1):
    """``OREPA_LargeConv.weight_gen``: start from the first 3 x 3 kernel transposed to (C, O, 3, 3), correlate
    it with each next kernel at padding 2 (in ``groups``), transpose back: a (O, C, k, k) kernel."""
    weight = _f64(kernels[0]).transpose(1, 0, 2, 3)
    for nxt in kernels[1:]:
        weight = correlate(weight, nxt, 2, groups)
    return weight.transpose(1, 0, 2, 3)


# ---------------------------------------------------------------- one conv site, whatever block it is


def read_unit(r, p):
    """The :class:`Unit` at prefix ``p``: a plain ConvBN (training or deploy), a DBB (training or
    ``dbb_reparam``), an OREPA k x k block, ``OREPA_1x1``, ``OREPA_LargeConv`` (or its ``Base``), or an
    OREPA deploy conv.  MapError if ``p`` holds none of them."""
    before = set(r.used)

    def done(unit):
        unit.consumed = sorted(r.used - before)
        return unit

    for deploy in ("dbb_reparam", "orepa_reparam", "or1x1_reparam", "or_large_reparam"):
        if r.has(f"{p}.{deploy}.weight"):
            return done(Unit(r.get(f"{p}.{deploy}.weight"), bias=r.get(f"{p}.{deploy}.bias"), form="deploy"))
    if r.has(f"{p}.dbb_origin.conv.weight"):
        return done(dbb_unit(r, p))
    if r.has(f"{p}.weight_orepa_origin"):
        return done(Unit(orepa_kernel(r, p, OREPA_NAMES), bn=r.bn(f"{p}.bn"), form="orepa"))
    if r.has(f"{p}.weight_or1x1_origin"):
        return done(Unit(orepa_1x1_kernel(r, p), bn=r.bn(f"{p}.bn"), form="orepa_1x1"))
    if r.has(f"{p}.weight0.weight_orepa_origin") or r.has(f"{p}.weight0"):
        parts, i = [], 0
        while r.has(f"{p}.weight{i}.weight_orepa_origin") or r.has(f"{p}.weight{i}"):
            sub = f"{p}.weight{i}"
            parts.append(orepa_kernel(r, sub, OREPA_NAMES) if r.has(f"{sub}.weight_orepa_origin") else r.get(sub))
            i += 1
        return done(Unit(chain_large_kernel(parts), bn=r.bn(f"{p}.bn"), form="orepa_large"))
    if r.has(f"{p}.conv.weight"):
        if r.is_bn(f"{p}.bn"):
            return done(Unit(r.get(f"{p}.conv.weight"), bn=r.bn(f"{p}.bn"), form="convbn"))
        if r.has(f"{p}.conv.bias"):
            return done(Unit(r.get(f"{p}.conv.weight"), bias=r.get(f"{p}.conv.bias"), form="deploy"))
    raise MapError(f"no conv block the map knows at '{p}' (its entries: "
                   f"{', '.join(n for n in sorted(r.state) if n.startswith(p + '.'))[:160] or 'none'})")


def torch_bn_to_mindspore(state):
    """``name -> array`` with every BN's PyTorch fields under MindSpore's names (``num_batches_tracked``
    dropped; a BN is a prefix with a ``running_mean``)."""
    from ...kinds.dbb.kind import rename_torch_state
    return rename_torch_state(state)


def dbb_unit(r, p):
    """A DBB in training form, folded by the DBB kind's own fold (the original's names are the kind's)."""
    from ...kinds import get_kind

    names = [n for n in r.state if n.startswith(f"{p}.dbb_")]
    for n in names:
        r.get(n)
    local = torch_bn_to_mindspore({n: r.state[n] for n in names})
    # the original's DBB: no conv bias, PyTorch's BN eps; its branches and BNs as its entries show
    kernel, bias, _ = get_kind("dbb").fold(local, p, {"has_bias": False, "eps": identities.BN_EPS})
    return Unit(kernel, bias=bias, form="dbb", consumed=names, raw={n[len(p) + 1:]: r.state[n] for n in names})


def repvgg_unit(r, p):
    """A RepVGG block at ``p`` as its three branches, MindCV's way: ``{"dense": Unit, "1x1": Unit or None,
    "identity": bn or None, "deploy": Unit or None}`` (RepVGG's own ``rbr_dense``/``rbr_1x1`` conv + BN or
    OREPA's generated ``rbr_dense``; a deploy block gives only ``deploy``)."""
    if r.has(f"{p}.rbr_reparam.weight"):
        return {"deploy": Unit(r.get(f"{p}.rbr_reparam.weight"), bias=r.get(f"{p}.rbr_reparam.bias"), form="deploy")}
    if r.has(f"{p}.rbr_dense.weight_rbr_origin"):
        dense = Unit(orepa_kernel(r, f"{p}.rbr_dense", OREPA_VGG_NAMES), bn=r.bn(f"{p}.rbr_dense.bn"), form="orepa")
    else:
        dense = Unit(r.get(f"{p}.rbr_dense.conv.weight"), bn=r.bn(f"{p}.rbr_dense.bn"), form="convbn")
    one = Unit(r.get(f"{p}.rbr_1x1.conv.weight"), bn=r.bn(f"{p}.rbr_1x1.bn"), form="convbn") \
        if r.has(f"{p}.rbr_1x1.conv.weight") else None
    identity = r.bn(f"{p}.rbr_identity") if r.is_bn(f"{p}.rbr_identity") else None
    return {"dense": dense, "1x1": one, "identity": identity, "deploy": None}
