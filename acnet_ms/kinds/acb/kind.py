"""The ACB kind: ACNet's Asymmetric Convolution Block (Ding et al., ICCV 2019).

Sites: every square k x k conv with 3 <= k <= 5, k odd (ACNet's rule: the
7 x 7 stems and 1 x 1 convs stay).  Its fold goes into the BN slot after the
conv (a BN per branch, ACNet's ACB), the conv's bias, or nowhere (no BN and no
bias: pre-activation networks; the branches then carry no BN either).

Options: ``branches`` (``hv``, ``h``, ``v``), ``branch_bn``, ``position``
(``center``, ``corner``: the paper's border variant), ``gamma_init``.  The
Cell is :class:`acnet_ms.kinds.acb.cell.ACBlock`; the arithmetic is :mod:`acnet_ms.kinds.identities`.
"""
from . import fold
from .. import identities
from ..base import BRANCH_BN, BranchBNKind, KindOption, gamma_init_option, square_odd_kernel
from ..table import register_kind

#: ACNet converts square k x k convs with MIN_K <= k <= MAX_K
MIN_K, MAX_K = 3, 5

SQUARE_MARKER = ".square_conv.weight"


class ACBKind(BranchBNKind):
    name = "acb"
    label = "ACB"
    marker = SQUARE_MARKER
    options = {
        "branches": KindOption("hv", "asymmetric branches: both, 1 x k only, k x 1 only", tuple(fold.BRANCH_SETS)),
        "branch_bn": BRANCH_BN,
        "position": KindOption("center", "asymmetric kernels on the centre row/column or the bottom row/right "
                               "column (the paper's border variant)", fold.POSITIONS),
        "gamma_init": gamma_init_option("initial gamma of the branch BNs (None: 1)", examples=(0.5,)),
    }
    flat = {"gamma_init": "gamma_init", "acb_branches": "branches", "acb_branch_bn": "branch_bn",
            "acb_position": "position"}
    origin_conv, origin_bn = "square_conv", "square_bn"
    layout_options = ("branches", "branch_bn", "position")

    # -------------------------------------------------------------- sites and Cells

    def eligible(self, site, options):
        verdict = square_odd_kernel(site, "ACNet converts odd k with 1 < k < 7")
        if verdict is True and not MIN_K <= site.kernel[0] <= MAX_K:
            return f"kernel {site.kernel[0]}x{site.kernel[0]} (ACNet converts odd k with 1 < k < 7)"
        return verdict

    def cell_class(self):
        from .cell import ACBlock

        return ACBlock

    def cell_options(self, options):
        return dict(branches=options["branches"], position=options["position"])

    # -------------------------------------------------------------- checkpoints

    @staticmethod
    def branch_entries(prefix, info):
        """Checkpoint names of one ACB's parameters, by branch: ``{"square": [...], "hor": [...], ...}``."""
        out = {}
        for branch in ("square",) + fold.BRANCH_SETS[info["branches"]]:
            names = [f"{prefix}.{branch}_conv.weight"]
            if info["branch_bn"]:
                names += [f"{prefix}.{branch}_bn.{f}" for f in identities.BN_FIELDS]
            out[branch] = names
        return out

    def entries(self, prefix, info):
        names = [n for names in self.branch_entries(prefix, info).values() for n in names]
        return names + ([f"{prefix}.square_conv.bias"] if info["has_bias"] else [])

    def fold(self, state, prefix, info):
        names = self.entries(prefix, info)
        self.check_complete(state, names, prefix)
        branches = {b: tuple(state[n] for n in group) for b, group in self.branch_entries(prefix, info).items()}
        bias = state[f"{prefix}.square_conv.bias"] if info["has_bias"] else None
        kernel, bias = fold.fold_acb(branches["square"], branches.get("hor"), branches.get("ver"),
                                     eps=info["eps"], position=info["position"],
                                     bias=bias)
        return kernel, bias, names

    # -------------------------------------------------------------- from_plain (BranchBNKind's)

    def zero_kernels(self, prefix, info, weight):
        o, cpg, kh, kw = weight.shape
        shapes = {"hor": (o, cpg, 1, kw), "ver": (o, cpg, kh, 1)}
        return {f"{prefix}.{b}_conv.weight": shapes[b] for b in fold.BRANCH_SETS[info["branches"]]}

    def silent_bns(self, prefix, info):
        return [f"{prefix}.{b}_bn" for b in fold.BRANCH_SETS[info["branches"]]]

    def infer_options(self, state, prefixes):
        """Which asymmetric branches exist and whether branches carry BNs show in the entries (every ACB
        of a model has the same options; a model whose ACBs all lack BNs folds the same either way); the
        position does not, and ``gamma_init`` only set the start of training."""
        if not prefixes:
            return {}, ["position"]
        p = prefixes[0]
        branches = "".join(b[0] for b in ("hor", "ver") if f"{p}.{b}_conv.weight" in state) or "hv"
        return dict(branches=branches, branch_bn=any(f"{q}.square_bn.gamma" in state for q in prefixes)), \
            ["position"]

    # -------------------------------------------------------------- cost

    def branch_macs(self, shape, options):
        """The square conv and the 1 x k and k x 1 convs (k^2 + 2k taps); without branch BNs one conv over
        their summed kernel (its assembly is additions)."""
        if not options["branch_bn"]:
            return {"one conv": shape.plain}
        k, out = shape.kernel_size, {"square": shape.plain}
        for branch in fold.BRANCH_SETS[options["branches"]]:
            out[branch] = shape.conv(shape.out_channels, shape.in_channels, k)
        return out


register_kind(ACBKind())
