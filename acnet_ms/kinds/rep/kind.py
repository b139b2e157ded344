"""The rep kind: RepVGG / MobileOne-style over-parameterization (Ding et al., CVPR 2021; Vasu et al., CVPR 2023).

Sites: every square k x k conv with k odd and k > 1 (the 1 x 1 branch and the
identity sit on the window's centre tap: exact for any stride, padding,
dilation and groups, depthwise included); with ``pointwise`` also every 1 x 1
conv whose output goes alone into a BatchNorm (MobileOne's pointwise convs;
the 1 x 1 convs of SE modules and classifiers, which have no BN after them,
stay plain).  Non-square and even kernels stay plain: they have no centre tap.

Each block has ``num_kxk`` parallel conv-BN branches of the site's own kernel,
a 1 x 1 conv-BN branch at k x k sites (``scale``) and an identity BN branch
where the conv keeps the input's shape and grid (``identity``).  Its fold goes
into the BN slot after the conv, the conv's bias, or nowhere (pre-activation
sites: then the branches carry no BN and train as one conv, as ACB's).  With
``quant_aware`` (QARepVGG, Chu et al., AAAI 2024) only the k x k branches
carry BNs, the 1 x 1 branch and the identity are bare, and the site's own BN
follows the sum; the fold still goes into the BN slot.  With ``csla``
(RepOpt's constant-scale linear form, Ding et al., ICLR 2023) no branch
carries a BN, each is times a per-output-channel gain, and the block trains as
one conv before the site's own BN: RepOpt's hyper-search model, whose gains
:mod:`acnet_ms.training.repopt` turns into the plain model's training.  The
Cell is :class:`acnet_ms.kinds.rep.cell.RepBlock`; the arithmetic is
:func:`acnet_ms.kinds.rep.fold.fold_rep`.

This module must not import MindSpore.
"""
import numpy as np

from .. import identities
from . import fold
from ..base import BRANCH_BN, BranchBNKind, KindOption, gamma_init_option, strict_bool
from ..table import register_kind
from ..._moved import moved_attr as _moved_attr

MARKER = ".dense.0.conv.weight"


def _count(value):
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise ValueError(f"expected an integer >= 1, got {value!r}")
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected an integer >= 1, got {value!r}") from None
    if count < 1:
        raise ValueError(f"expected an integer >= 1, got {value!r}")
    return count


class RepKind(BranchBNKind):
    name = "rep"
    label = "rep block"
    family = "repvgg"
    marker = MARKER
    options = {
        "num_kxk": KindOption(1, "parallel conv-BN branches of the conv's own kernel (MobileOne's "
                              "num_conv_branches)", None, _count, (3,)),
        "pointwise": KindOption(False, "1 x 1 convs followed by a BN become rep blocks too (parallel 1 x 1 "
                                "branches + identity), as in MobileOne", (True, False), strict_bool),
        "scale": KindOption(True, "a 1 x 1 conv-BN branch at the centre of each k x k conv", (True, False),
                            strict_bool),
        "identity": KindOption(True, "an identity BN branch where the conv keeps the input's shape and grid",
                               (True, False), strict_bool),
        "branch_bn": BRANCH_BN,
        "quant_aware": KindOption(False, "QARepVGG's quantization-aware form: BNs on the k x k branches only, "
                                  "the 1 x 1 branch and the identity bare, the site's BN after the sum (needs "
                                  "branch_bn)", (True, False), strict_bool),
        "csla": KindOption(False, "RepOpt's constant-scale linear form: no branch BN, each branch times a "
                           "per-channel gain, the site's BN after the sum (the hyper-search model of "
                           "docs/repopt.md)", (True, False), strict_bool),
        "gamma_init": gamma_init_option("initial gamma of every branch BN (None: 1, the first branch keeps the "
                                        "model's BN); with csla, the branches' initial gain"),
    }
    origin_conv, origin_bn = "dense.0.conv", "dense.0.bn"
    layout_options = ("num_kxk", "branch_bn", "quant_aware", "csla")
    layout_defaults = dict(BranchBNKind.layout_defaults, has_scale=False, has_identity=False)

    def check_options(self, options=None):
        options = super().check_options(options)
        if options["csla"] and options["quant_aware"]:
            raise ValueError("block_type rep: options 'csla' and 'quant_aware' are two forms; set one")
        if options["quant_aware"] and not options["branch_bn"]:
            raise ValueError("block_type rep: option 'quant_aware' needs branch_bn true (its k x k branches and "
                             "the sum end in BNs)")
        return options

    # -------------------------------------------------------------- sites and Cells

    def eligible(self, site, options):
        kh, kw = site.kernel
        if (kh, kw) == (1, 1):
            if not options["pointwise"]:
                return False
            if site.bn or site.feeds_bn:  # a BN and something else: the tracer's reason
                return True
            return "1 x 1 conv with no BatchNorm after it (pointwise rep blocks take conv + BN pairs)"
        if kh != kw:
            return f"non-square kernel {kh}x{kw} (no centre tap for the 1 x 1 branch)"
        if kh % 2 == 0:
            return f"even kernel {kh}x{kh} (no centre tap for the 1 x 1 branch)"
        return True

    def slot(self, site, options):
        """BranchBNKind's; the constant-scale form has no branch BN, so the site's BN stays after it."""
        return super().slot(site, dict(options, branch_bn=options["branch_bn"] and not options["csla"]))

    def cell_class(self):
        from .cell import RepBlock

        return RepBlock

    def cell_options(self, options):
        return dict(num_kxk=options["num_kxk"], scale=options["scale"], identity=options["identity"],
                    quant_aware=options["quant_aware"], csla=options["csla"])

    def slot_counts(self, slots):
        """The kernels' counts (``"k x k"``, ``"1 x 1"``), then the slots' (see :class:`BlockKind`)."""
        slots = list(slots)
        kernels = {}
        for entry in slots:
            kernel = tuple(entry.get("kernel") or ()) if isinstance(entry, dict) else ()
            if kernel:
                word = "1 x 1" if kernel == (1, 1) else "k x k"
                kernels[word] = kernels.get(word, 0) + 1
        if set(kernels) != {"k x k", "1 x 1"}:
            kernels = {}  # one kernel size: the sentence says it
        return dict(kernels, **super().slot_counts(slots))

    def summary_words(self, n, counts):
        """``"52 convs became rep blocks (20 k x k, 32 1 x 1; 50 BN slot, 2 no BN (bias-free))"``."""
        sizes = ", ".join(f"{counts[w]} {w}" for w in ("k x k", "1 x 1") if w in counts)
        slots = ", ".join(f"{c} {w}" for w, c in counts.items() if w not in ("k x k", "1 x 1"))
        words = "; ".join(filter(None, (sizes, slots)))
        return f"{n} {'convs' if sizes else 'k x k convs'} became {self.label}s" + (f" ({words})" if words else "")

    # -------------------------------------------------------------- checkpoints

    @staticmethod
    def branch_entries(prefix, info):
        """Checkpoint names of one block's parameters, by branch: ``{"dense.0": [...], "scale": [...],
        "identity": [...]}`` (the identity has none without branch BNs), and ``"post_bn"`` (the BN after the
        sum) in the quantization-aware form, whose 1 x 1 branch and identity carry no BN; in the constant-scale
        form each branch's gain (``dense.0.gain``, ..., ``identity_gain``)."""
        with_bn, aware, csla = info["branch_bn"], info["quant_aware"], info["csla"]

        def conv_bn(head, bn=with_bn):
            gain = [f"{head}.gain"] if csla else []
            return [f"{head}.conv.weight"] + ([f"{head}.bn.{f}" for f in identities.BN_FIELDS] if bn else gain)

        out = {f"dense.{i}": conv_bn(f"{prefix}.dense.{i}") for i in range(info["num_kxk"])}
        if info["has_scale"]:
            out["scale"] = conv_bn(f"{prefix}.scale", with_bn and not aware)
        if aware:
            out["post_bn"] = [f"{prefix}.post_bn.{f}" for f in identities.BN_FIELDS]
        elif info["has_identity"] and with_bn:
            out["identity"] = [f"{prefix}.identity_bn.{f}" for f in identities.BN_FIELDS]
        elif info["has_identity"] and csla:
            out["identity"] = [f"{prefix}.identity_gain"]
        return out

    def entries(self, prefix, info):
        names = [n for names in self.branch_entries(prefix, info).values() for n in names]
        return names + ([f"{prefix}.dense.0.conv.bias"] if info["has_bias"] else [])

    def fold(self, state, prefix, info):
        names = self.entries(prefix, info)
        self.check_complete(state, names, prefix)
        arrays = {b: tuple(state[n] for n in ns) for b, ns in self.branch_entries(prefix, info).items()}
        dense = [arrays[f"dense.{i}"] for i in range(info["num_kxk"])]
        if info["quant_aware"]:
            kernel, bias = fold.fold_quant_aware(dense, arrays.get("scale"), info["has_identity"], arrays["post_bn"],
                                                 eps=info["eps"])
            return kernel, bias, names
        bias = state[f"{prefix}.dense.0.conv.bias"] if info["has_bias"] else None
        if info["csla"]:
            identity = arrays["identity"][0] if info["has_identity"] else None
            kernel, bias = fold.fold_csla(dense, arrays.get("scale"), identity, bias=bias)
            return kernel, bias, names
        identity = arrays.get("identity", ()) if info["has_identity"] else None
        kernel, bias = fold.fold_rep(dense, arrays.get("scale"), identity, eps=info["eps"],
                                     bias=bias)
        return kernel, bias, names

    # -------------------------------------------------------------- from_plain (BranchBNKind's)

    def from_plain(self, state, prefix, info):
        """In the quantization-aware form the plain BN (or a BN that adds the conv's bias) becomes the BN
        after the sum, the k x k branches' BNs the identity map (gamma = sqrt(1 + eps), mean 0, variance 1),
        the first kernel the plain one less the identity's, the other kernels zero; otherwise
        BranchBNKind's."""
        if info["csla"] and f"{prefix}.weight" in state:  # the BN-free form, every gain 1
            out = super().from_plain(state, prefix, info)
            for name in self.entries(prefix, info):
                if name.endswith("gain"):
                    out[name] = np.ones(np.shape(state[f"{prefix}.weight"])[0], state[f"{prefix}.weight"].dtype)
            return out
        if not info["quant_aware"] or f"{prefix}.weight" not in state:
            return super().from_plain(state, prefix, info)
        out = dict(state)
        weight = out.pop(f"{prefix}.weight")
        out[f"{prefix}.dense.0.conv.weight"] = self.origin_kernel(weight, info)
        for name, shape in self.zero_kernels(prefix, info, weight).items():
            out[name] = np.zeros(shape, weight.dtype)
        self.move_slot_bn(out, prefix, info, f"{prefix}.post_bn")
        unit = identities.bias_as_bn(np.zeros(weight.shape[0], weight.dtype), info["eps"])
        for i in range(info["num_kxk"]):
            for field, value in unit.items():
                out[f"{prefix}.dense.{i}.bn.{field}"] = value.astype(weight.dtype)
        return out

    def origin_kernel(self, weight, info):
        """Without branch BNs (or in the quantization-aware form) the identity adds ``x`` itself: the first
        kernel is the plain one less the identity's."""
        if not info["has_identity"]:
            return weight
        return (weight - identities.identity_kernel(weight.shape[0], weight.shape[1], weight.shape[2])
                ).astype(weight.dtype)

    def zero_kernels(self, prefix, info, weight):
        zeros = {f"{prefix}.dense.{i}.conv.weight": weight.shape for i in range(1, info["num_kxk"])}
        if info["has_scale"]:
            zeros[f"{prefix}.scale.conv.weight"] = weight.shape[:2] + (1, 1)
        return zeros

    def silent_bns(self, prefix, info):
        heads = [f"{prefix}.dense.{i}.bn" for i in range(1, info["num_kxk"])]
        heads += [f"{prefix}.scale.bn"] if info["has_scale"] else []
        return heads + ([f"{prefix}.identity_bn"] if info["has_identity"] else [])

    def infer_options(self, state, prefixes):
        """The entries show ``num_kxk`` (the parallel branches of every block), ``pointwise`` (a block with a
        1 x 1 kernel), ``scale`` (a k x k block with a 1 x 1 branch) and ``branch_bn`` (BN entries; a model
        whose blocks all lack BNs folds the same either way).  ``identity`` shows only through an identity
        BN: with every block carrying BNs, none means identity off (or no block that keeps its grid, which
        builds the same), and so does an identity gain in the constant-scale form (``csla``, shown by the
        gains); a block without BNs would have an identity without entries, so it is unseen."""
        if not prefixes:
            return {}, ["identity"]
        p = prefixes[0]
        num = 1
        while f"{p}.dense.{num}.conv.weight" in state:
            num += 1
        kernels = {q: tuple(np.shape(state[q + MARKER])[2:]) for q in prefixes}
        square = [q for q, k in kernels.items() if k != (1, 1)]
        with_bn = [f"{q}.dense.0.bn.gamma" in state for q in prefixes]
        shown = dict(num_kxk=num, pointwise=any(k == (1, 1) for k in kernels.values()), branch_bn=any(with_bn),
                     quant_aware=any(f"{q}.post_bn.gamma" in state for q in prefixes),
                     csla=any(f"{q}.dense.0.gain" in state for q in prefixes))
        if shown["csla"]:
            del shown["branch_bn"]  # no branch BN either way: the constant-scale form reads no branch_bn
        if square:
            shown["scale"] = any(f"{q}.scale.conv.weight" in state for q in square)
        if any(f"{q}.identity_bn.gamma" in state or f"{q}.identity_gain" in state for q in prefixes):
            shown["identity"] = True
        elif all(with_bn) and not shown["quant_aware"] or all(f"{q}.dense.0.gain" in state for q in prefixes):
            shown["identity"] = False  # no block that keeps its grid has one: identity off, or no such block
        return shown, [k for k in ("scale", "identity") if k not in shown]

    # -------------------------------------------------------------- cost

    def branch_macs(self, shape, options):
        """``num_kxk`` convs of the site's kernel and, at k x k sites with ``scale``, the 1 x 1 conv:
        ``(num_kxk k^2 + 1) / k^2`` x the plain conv whatever the channels, groups and strides (the BNs and
        the identity are elementwise).  Without branch BNs one conv over the summed kernel: 1.  A 3 x 3
        conv: 10/9 = 1.11; MobileOne's ``num_kxk=4``: 37/9 = 4.11."""
        if not options["branch_bn"]:
            return {"one conv": shape.plain}
        out = {f"dense.{i}": shape.plain for i in range(options["num_kxk"])}
        if options["scale"] and shape.kernel_size > 1:
            out["scale"] = shape.conv(shape.out_channels, shape.in_channels, 1)
        return out


register_kind(RepKind())


# the names this module had before the package was laid out by role (acnet_ms/_moved.py)
__getattr__ = _moved_attr(__name__)
