"""The DBB kind: the Diverse Branch Block (Ding et al., "Diverse Branch Block: Building a Convolution as an
Inception-like Unit", CVPR 2021).

Sites: every square k x k conv with odd k >= 3, whatever its stride, padding
(below k // 2 too), dilation, groups and pad mode: each branch samples the k x k
conv's grid, so the fold is exact in every case (the original asserts
``padding == k // 2``).  Non-square and even kernels stay plain (the 1 x 1
branch sits at the window's centre).  The fold goes into the BN slot after the
conv (a BN per branch, the original's block), the conv's bias, or nowhere (no BN
and no bias: pre-activation networks; the branches then carry no BN either and
train as one conv over the kernel they sum to).

Options: ``branch_bn`` (default true), ``gamma_init`` (the initial gamma of the
last BN of every branch, as the original's ``init_gamma``; 0 is its ``single_init``).
The Cell is :class:`acnet_ms.kinds.dbb.cell.DiverseBranchBlock`; the arithmetic is
:func:`acnet_ms.kinds.dbb.fold.fold_dbb`.  Entry names are the original PyTorch block's
(``dbb_origin.conv.weight``, ``dbb_avg.bn.bn.gamma``, ...), BN fields as MindSpore's.
"""
import numpy as np

from . import fold
from .. import identities
from ..base import BRANCH_BN, BranchBNKind, gamma_init_option, square_odd_kernel
from ..table import register_kind
from ..._moved import moved_attr as _moved_attr

ORIGIN_MARKER = ".dbb_origin.conv.weight"


#: PyTorch's BatchNorm fields -> MindSpore's (``num_batches_tracked`` has no counterpart)
TORCH_BN_FIELDS = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def rename_torch_state(state):
    """A PyTorch state dict (name -> numpy array) with its BatchNorms' fields under MindSpore's names.

    A BN is a prefix with a ``running_mean`` entry; its ``weight``/``bias``/``running_mean``/``running_var``
    become ``gamma``/``beta``/``moving_mean``/``moving_variance`` and ``num_batches_tracked`` goes.  The
    original DBB's names are this kind's, so its state dict then loads into a :class:`DiverseBranchBlock`.
    """
    bns = {name[:-len(".running_mean")] for name in state if name.endswith(".running_mean")}
    out = {}
    for name, value in state.items():
        prefix, _, field = name.rpartition(".")
        if prefix not in bns:
            out[name] = value
        elif field in TORCH_BN_FIELDS:
            out[f"{prefix}.{TORCH_BN_FIELDS[field]}"] = value
    return out


class DBBKind(BranchBNKind):
    name = "dbb"
    label = "DBB"
    marker = ORIGIN_MARKER
    options = {
        "branch_bn": BRANCH_BN,
        "gamma_init": gamma_init_option("initial gamma of the last BN of every branch, dbb_origin's included "
                                        "(None: 1; 0: the original's single_init)"),
    }
    origin_conv, origin_bn = "dbb_origin.conv", "dbb_origin.bn"

    # -------------------------------------------------------------- sites and Cells

    def eligible(self, site, options):
        return square_odd_kernel(site, "DBB needs an odd k: its 1 x 1 branch sits at the window's centre")

    def cell_class(self):
        from .cell import DiverseBranchBlock

        return DiverseBranchBlock

    # -------------------------------------------------------------- checkpoints

    @staticmethod
    def structure(state, prefix, info):
        """``(branch_bn, depthwise, identity)`` of the block at ``prefix``: its info's, else what its entries
        in ``state`` show, else the original's defaults (BNs, not depthwise, ``idconv1``)."""
        shown = dict(branch_bn=f"{prefix}.dbb_origin.bn.gamma" in state,
                     depthwise=f"{prefix}.dbb_1x1.conv.weight" not in state,
                     identity=f"{prefix}.dbb_1x1_kxk.conv1.weight" not in state) if state else \
            dict(branch_bn=True, depthwise=False, identity=True)
        return tuple(bool(info.get(key, shown[key])) for key in ("branch_bn", "depthwise", "identity"))

    @staticmethod
    def branch_entries(prefix, branch_bn=True, depthwise=False, identity=True, has_bias=False):
        """Checkpoint names of one DBB's parameters, by branch: ``{"dbb_origin": [...], ...}``."""
        def bn(name):
            return [f"{prefix}.{name}.{f}" for f in identities.BN_FIELDS] if branch_bn else []

        out = {"dbb_origin": [f"{prefix}.dbb_origin.conv.weight"] + bn("dbb_origin.bn")
               + ([f"{prefix}.dbb_origin.conv.bias"] if has_bias and not branch_bn else [])}
        if not depthwise:
            out["dbb_1x1"] = [f"{prefix}.dbb_1x1.conv.weight"] + bn("dbb_1x1.bn")
            out["dbb_avg"] = [f"{prefix}.dbb_avg.conv.weight"] + bn("dbb_avg.bn.bn") + bn("dbb_avg.avgbn")
        elif branch_bn:
            out["dbb_avg"] = bn("dbb_avg.avgbn")
        first = "idconv1" if identity else "conv1"
        out["dbb_1x1_kxk"] = ([f"{prefix}.dbb_1x1_kxk.{first}.weight"] + bn("dbb_1x1_kxk.bn1.bn")
                              + [f"{prefix}.dbb_1x1_kxk.conv2.weight"] + bn("dbb_1x1_kxk.bn2"))
        return out

    def entries(self, prefix, info):
        branch_bn, depthwise, identity = self.structure({}, prefix, info)
        names = self.branch_entries(prefix, branch_bn, depthwise, identity, info["has_bias"])
        return [n for group in names.values() for n in group]

    def fold(self, state, prefix, info):
        branch_bn, depthwise, identity = self.structure(state, prefix, info)
        has_bias = info["has_bias"] and not branch_bn
        names = self.branch_entries(prefix, branch_bn, depthwise, identity, has_bias)
        consumed = [n for group in names.values() for n in group]
        self.check_complete(state, consumed, prefix)

        def get(name):
            return np.asarray(state[f"{prefix}.{name}"])

        def bn(name):
            return tuple(get(f"{name}.{f}") for f in identities.BN_FIELDS) if branch_bn else None

        args = dict(origin=(get("dbb_origin.conv.weight"), bn("dbb_origin.bn")))
        if not depthwise:
            args["one"] = (get("dbb_1x1.conv.weight"), bn("dbb_1x1.bn"))
            args["avg"] = (get("dbb_avg.conv.weight"), bn("dbb_avg.bn.bn"), bn("dbb_avg.avgbn"))
        elif branch_bn:
            args["avg"] = (None, None, bn("dbb_avg.avgbn"))
        first = get("dbb_1x1_kxk.idconv1.weight" if identity else "dbb_1x1_kxk.conv1.weight")
        if identity:
            first = first + identities.identity_kernel(*first.shape[:2], 1, first.dtype)
        second = get("dbb_1x1_kxk.conv2.weight")
        args["seq"] = (first, bn("dbb_1x1_kxk.bn1.bn"), second, bn("dbb_1x1_kxk.bn2"))
        groups = first.shape[0] // second.shape[1]
        bias = get("dbb_origin.conv.bias") if has_bias else None
        kernel, bias = fold.fold_dbb(**args, groups=groups, eps=info["eps"], bias=bias)
        return kernel, bias, consumed

    # -------------------------------------------------------------- from_plain (BranchBNKind's)

    def zero_kernels(self, prefix, info, weight):
        _, depthwise, _ = self.structure({}, prefix, info)
        o, cpg, k = weight.shape[0], weight.shape[1], weight.shape[2]
        zeros = {"dbb_1x1_kxk.conv2.weight": (o, info["internal"] // info["groups"], k, k)}
        if not depthwise:
            zeros.update({"dbb_1x1.conv.weight": (o, cpg, 1, 1), "dbb_avg.conv.weight": (o, cpg, 1, 1)})
        return {f"{prefix}.{name}": shape for name, shape in zeros.items()}

    def silent_bns(self, prefix, info):
        _, depthwise, _ = self.structure({}, prefix, info)
        last = ("dbb_avg.avgbn", "dbb_1x1_kxk.bn2") + (() if depthwise else ("dbb_1x1.bn",))
        return [f"{prefix}.{name}" for name in last]

    def infer_options(self, state, prefixes):
        """Whether branches carry BNs shows in the entries (a model whose DBBs all lack BNs folds the same
        either way); ``gamma_init`` only set the start of training."""
        if not prefixes:
            return {}, []
        return dict(branch_bn=any(f"{q}.dbb_origin.bn.gamma" in state for q in prefixes)), []

    # -------------------------------------------------------------- cost

    def branch_macs(self, shape, options):
        """The four branches' convs and the k x k average pooling's adds; without branch BNs one conv over
        the summed kernel plus that kernel's assembly (the 1 x 1 then k x k merge, once per pass).  The
        3 x 3, 64 -> 64, stride-1 conv: 1353 / 576 = 2.35 x the plain conv."""
        k, cin, cout, g = shape.kernel_size, shape.in_channels, shape.out_channels, shape.groups
        depthwise = g == cin == cout
        internal = 2 * cin if depthwise else cin
        if not options["branch_bn"]:
            return {"dbb_origin": shape.plain, "kernel assembly": cout * (cin // g) * (internal // g) * k * k}
        out = {"dbb_origin": shape.plain}
        if not depthwise:
            out["dbb_1x1"] = shape.conv(cout, cin, 1)
        out["dbb_avg"] = shape.out_pixels * cout * k * k + (0 if depthwise else shape.conv(cout, cin, 1, True))
        out["dbb_1x1_kxk"] = shape.conv(internal, cin, 1, True) + shape.conv(cout, internal, k * k)
        return out


register_kind(DBBKind())


# the names this module had before the package was laid out by role (acnet_ms/_moved.py)
__getattr__ = _moved_attr(__name__)
