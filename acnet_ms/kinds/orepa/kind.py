"""The OREPA kind: Online Convolutional Re-parameterization (Hu et al., CVPR 2022).

Sites: every square k x k conv with k odd and k >= 3, any groups (depthwise
included); 1 x 1 convs stay as they are, even and non-square kernels stay
plain with the reason.  Each becomes ONE conv whose kernel is generated at
every step from OREPA's linear branches (:class:`acnet_ms.kinds.orepa.cell.OREPABlock`).
There is no BN inside, so the fold is that kernel alone (slot ``"none"``) or
the kernel and the conv's own bias (``"bias"``): a BN after the conv stays
the model's own, and a stock checkpoint's ``X.weight`` is simply the
generated kernel.

Options: ``branches`` (which of the six, the origin always among them: the
paper's component ablation) and ``init`` (``paper``: the original's branch
scales; ``single``: the origin alone, the block starts as the conv it
replaces; ``auto``, the default: ``paper`` where a BN alone follows the
conv, ``single`` where none does).  The original always has a BN after its
block, which makes the scale of its Kaiming-uniform branch kernels harmless;
at a BN-free site (CMT's ``x + dwconv(x)``, SqueezeNet's, VGG's convs) the
paper's start generates a kernel far larger than the conv it replaces (std
0.64 against 0.015 to 0.03 on CMT's depthwise sites), which overflows
float16 in the first forward.  The arithmetic is :mod:`acnet_ms.kinds.identities` (``fold_orepa``).

This module must not import MindSpore.
"""
import numpy as np

from .spec import (ALL, BRANCH_PARAMS, BRANCHES, EXPAND, INITS, MARKER, _shapes_of, branch_names, generated_kernel,
                   initial_arrays, internal_channels, params, parse_branches)
from ..base import BlockKind, KindOption, square_odd_kernel
from ..table import register_kind


class OREPAKind(BlockKind):
    name = "orepa"
    label = "OREPA block"
    marker = MARKER
    options = {
        "branches": KindOption(ALL, "OREPA's linear branches, comma-separated, origin always among them: "
                               + ", ".join(BRANCHES), None, parse_branches, ("origin,prior,dws",)),
        "init": KindOption("auto", "the branch scales' start: paper, the original's (origin 0.25, avg 0.25, "
                           "prior 0, 1x1_kxk 0.5, 1x1 1, dws 0.5); single, the origin alone (1; the others 0: the "
                           "block starts as the conv it replaces); auto, paper where a BN follows the conv and "
                           "single where none does", ("auto",) + tuple(INITS)),
    }
    sees_bn_after = True  # init auto: whether a BN follows the site
    layout_options = ("branches",)
    layout_defaults = {"has_bias": False, "expand": EXPAND}
    slot_words = {"none": "kernel alone", "bias": "kernel + conv bias"}

    # -------------------------------------------------------------- sites and Cells

    def eligible(self, site, options):
        return square_odd_kernel(site, "OREPA takes odd k >= 3")

    def slot(self, site, options):
        # no BN inside: the model's BN after the conv, if any, stays where it is
        return "bias" if site.has_bias else "none"

    def build(self, conv, bn, slot, options, seed):
        from .cell import OREPABlock

        init = options["init"]
        if init == "auto":
            init = "paper" if bn is not None else "single"
        return OREPABlock.from_conv(conv, branches=options["branches"], init=init, seed=seed)

    def summary_words(self, n, counts):
        """``"20 k x k convs became OREPA blocks (20 kernel alone; the model's BN after one stays)"``."""
        kinds = ", ".join(f"{c} {w}" for w, c in counts.items())
        if not kinds:
            return f"{n} k x k convs became {self.label}s"
        return f"{n} k x k convs became {self.label}s ({kinds}; the model's BN after one stays)"

    # -------------------------------------------------------------- checkpoints

    def entries(self, prefix, info):
        names = [f"{prefix}.{name}" for name in params(info["branches"])]
        return names + ([f"{prefix}.orepa_bias"] if info["has_bias"] else [])

    def fold(self, state, prefix, info):
        names = self.entries(prefix, info)
        self.check_complete(state, names, prefix)
        kernel = generated_kernel({name[len(prefix) + 1:]: state[name] for name in names}, info["groups"])
        bias = np.asarray(state[f"{prefix}.orepa_bias"]) if info["has_bias"] else None
        return kernel, bias, names

    def from_plain(self, state, prefix, info):
        """The plain kernel becomes the origin branch, scaled by 1; every other branch is scaled by 0, its
        kernels drawn as at the start of training (from a generator seeded by the block's name: a branch
        whose scale and kernels were both 0 would never get a gradient)."""
        out = dict(state)
        conv = f"{prefix}.weight"
        if conv not in state:
            return out
        weight = out.pop(conv)
        for name, value in initial_arrays(_shapes_of(info), "single", prefix, origin=weight).items():
            out[f"{prefix}.{name}"] = value
        if info["has_bias"] and f"{prefix}.bias" in out:
            out[f"{prefix}.orepa_bias"] = out.pop(f"{prefix}.bias")
        return out

    def infer_options(self, state, prefixes):
        """The branches show in the entries (every block of a model has the same); ``init`` only set the
        start of training, and no entry shows it."""
        if not prefixes:
            return {}, ["init"]
        p = prefixes[0]
        present = [b for b in BRANCHES if f"{p}.{BRANCH_PARAMS[b][0]}" in state]
        return {"branches": ",".join(present)}, ["init"]

    # -------------------------------------------------------------- cost

    def branch_macs(self, shape, options):
        """One conv, and the kernel's generation, which does not depend on the batch or the image size: per
        kernel entry one product per branch and an addition, plus T/g (the 1x1-kxk branch's middle per
        group) and M = 8 (the depthwise-separable branch's expansion) for the two compositions."""
        names = branch_names(options["branches"])
        k, g = shape.kernel_size, shape.groups
        entries = shape.out_channels * (shape.in_channels // g) * k * k
        per_entry = 2 * len(names) + (internal_channels(shape.in_channels, g) // g if "1x1_kxk" in names else 0) \
            + (EXPAND if "dws" in names else 0)
        return {"conv": shape.plain, "kernel": entries * per_entry}


register_kind(OREPAKind())
