"""The ACB kind: ACNet's Asymmetric Convolution Block (Ding et al., ICCV 2019).

Sites: every square k x k conv with 3 <= k <= 5, k odd (ACNet's rule: the
7 x 7 stems and 1 x 1 convs stay).  Its fold goes into the BN slot after the
conv (a BN per branch, ACNet's ACB), the conv's bias, or nowhere (no BN and no
bias: pre-activation networks; the branches then carry no BN either).

Options: ``branches`` (``hv``, ``h``, ``v``), ``branch_bn``, ``position``
(``center``, ``corner``: the paper's border variant), ``gamma_init``.  The
Cell is :class:`acnet_ms.kinds.acb.cell.ACBlock`; the arithmetic is :mod:`acnet_ms.kinds.identities`.
"""
import numpy as np

from . import fold
from .. import identities
from ..base import BlockKind, KindOption, optional_number, register_kind, square_odd_kernel, strict_bool

#: ACNet converts square k x k convs with MIN_K <= k <= MAX_K
MIN_K, MAX_K = 3, 5

SQUARE_MARKER = ".square_conv.weight"


class ACBKind(BlockKind):
    name = "acb"
    label = "ACB"
    marker = SQUARE_MARKER
    options = {
        "branches": KindOption("hv", "asymmetric branches: both, 1 x k only, k x 1 only", tuple(fold.BRANCH_SETS)),
        "branch_bn": KindOption(True, "a BN per branch (False: the branch convs are summed, trained as one conv)",
                                (True, False), strict_bool),
        "position": KindOption("center", "asymmetric kernels on the centre row/column or the bottom row/right "
                               "column (the paper's border variant)", fold.POSITIONS),
        "gamma_init": KindOption(None, "initial gamma of the branch BNs (None: 1)", None, optional_number),
    }
    flat = {"gamma_init": "gamma_init", "acb_branches": "branches", "acb_branch_bn": "branch_bn",
            "acb_position": "position"}
    slot_words = {"bn": "BN slot", "bias": "conv bias", "none": "no BN (bias-free)"}

    # -------------------------------------------------------------- sites and Cells

    def eligible(self, site, options):
        verdict = square_odd_kernel(site, "ACNet converts odd k with 1 < k < 7")
        if verdict is True and not MIN_K <= site.kernel[0] <= MAX_K:
            return f"kernel {site.kernel[0]}x{site.kernel[0]} (ACNet converts odd k with 1 < k < 7)"
        return verdict

    def build(self, conv, bn, slot, options, seed):
        from .cell import ACBlock

        with_bn = options["branch_bn"] and slot != "none"
        return ACBlock.from_conv(conv, bn if with_bn else None, gamma_init=options["gamma_init"],
                                 branches=options["branches"], branch_bn=with_bn, position=options["position"],
                                 seed=seed)

    # -------------------------------------------------------------- checkpoints

    @staticmethod
    def branch_entries(prefix, info):
        """Checkpoint names of one ACB's parameters, by branch: ``{"square": [...], "hor": [...], ...}``."""
        out = {}
        for branch in ("square",) + fold.BRANCH_SETS[info.get("branches", "hv")]:
            names = [f"{prefix}.{branch}_conv.weight"]
            if info.get("branch_bn", True):
                names += [f"{prefix}.{branch}_bn.{f}" for f in identities.BN_FIELDS]
            out[branch] = names
        return out

    def entries(self, prefix, info):
        names = [n for names in self.branch_entries(prefix, info).values() for n in names]
        return names + ([f"{prefix}.square_conv.bias"] if info.get("has_bias") else [])

    def fold(self, state, prefix, info):
        entries = self.branch_entries(prefix, info)
        bias_name = f"{prefix}.square_conv.bias"
        for names in entries.values():
            missing = [n for n in names if n not in state]
            if missing:
                raise ValueError(f"ACB '{prefix}' is incomplete: '{missing[0]}' is missing")
        branches = {b: tuple(state[n] for n in names) for b, names in entries.items()}
        bias = state.get(bias_name) if info.get("has_bias") else None
        kernel, bias = fold.fold_acb(branches["square"], branches.get("hor"), branches.get("ver"),
                                     eps=info.get("eps", identities.BN_EPS), position=info.get("position", "center"),
                                     bias=bias)
        return kernel, bias, self.entries(prefix, info)

    def from_plain(self, state, prefix, info):
        """The plain conv becomes the square branch; each asymmetric branch adds exactly zero (its BN's
        gamma = beta = 0, or, without branch BNs, a zero kernel) until training moves it."""
        out = dict(state)
        conv = f"{prefix}.weight"
        if conv not in state:
            return out
        weight = out.pop(conv)
        out[f"{prefix}.square_conv.weight"] = weight
        asym = fold.BRANCH_SETS[info.get("branches", "hv")]
        if not info.get("branch_bn", True):
            if f"{prefix}.bias" in out:
                out[f"{prefix}.square_conv.bias"] = out.pop(f"{prefix}.bias")
            for branch in asym:
                shape = np.shape(weight)[:2] + ((1, weight.shape[3]) if branch == "hor" else (weight.shape[2], 1))
                out[f"{prefix}.{branch}_conv.weight"] = np.zeros(shape, weight.dtype)
            return out
        if info["slot"] == "bn":
            for field in identities.BN_FIELDS:
                if f"{info['bn']}.{field}" in out:
                    out[f"{prefix}.square_bn.{field}"] = out.pop(f"{info['bn']}.{field}")
        elif f"{prefix}.bias" in out:
            bias = out.pop(f"{prefix}.bias")
            for field, value in identities.bias_as_bn(bias, info.get("eps", identities.BN_EPS)).items():
                out[f"{prefix}.square_bn.{field}"] = value
        zeros = np.zeros(np.shape(weight)[0], weight.dtype)
        for branch in asym:
            out[f"{prefix}.{branch}_bn.gamma"] = zeros
            out[f"{prefix}.{branch}_bn.beta"] = zeros
        return out

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


register_kind(ACBKind())
