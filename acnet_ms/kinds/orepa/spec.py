"""OREPA's branches as data: their names, parameters, shapes and starting values, and the kernel they
generate, in pure numpy; what the OREPA kind (:mod:`acnet_ms.kinds.orepa`) and its Cell
(:class:`acnet_ms.kinds.orepa.cell.OREPABlock`) share.

This module must not import MindSpore.
"""
import zlib

import numpy as np

from . import fold

MARKER = ".orepa_vector"

#: the six branches, in the order of the scale vector's rows
BRANCHES = fold.OREPA_BRANCHES

#: initial branch scales: the original's (origin 0.25, avg 0.25, prior 0, 1x1-kxk 0.5, 1x1 1, dws 0.5), or
#: its ``single_init`` (the origin alone: the block starts as the conv it replaces)
INITS = {"paper": dict(zip(BRANCHES, (0.25, 0.25, 0.0, 0.5, 1.0, 0.5))),
         "single": dict(zip(BRANCHES, (1.0, 0.0, 0.0, 0.0, 0.0, 0.0)))}

#: the depthwise-separable branch's channel multiplier (the original's ``expand_ratio``)
EXPAND = 8

#: each branch's parameters (checkpoint entries ``X.<name>``); every block also has ``orepa_vector``
BRANCH_PARAMS = {"origin": ("orepa_origin",), "avg": ("orepa_avg",), "prior": ("orepa_prior",),
                 "1x1_kxk": ("orepa_1x1_kxk_idconv1", "orepa_1x1_kxk_conv2"), "1x1": ("orepa_1x1",),
                 "dws": ("orepa_dw", "orepa_pw")}

ALL = ",".join(BRANCHES)


def parse_branches(value):
    """The branches as a comma-separated string in :data:`BRANCHES` order, from such a string (commas or
    '+' between names) or a list; ValueError for an unknown name or a set without ``origin``."""
    if isinstance(value, str):
        names = [v.strip() for v in value.replace("+", ",").split(",") if v.strip()]
    elif isinstance(value, (list, tuple)):
        names = [str(v).strip() for v in value]
    else:
        raise ValueError(f"expected branch names ({', '.join(BRANCHES)}), got {value!r}")
    unknown = [n for n in names if n not in BRANCHES]
    if unknown:
        raise ValueError(f"unknown branch {unknown[0]!r} (branches: {', '.join(BRANCHES)})")
    if "origin" not in names:
        raise ValueError(f"the branches must include origin, got {value!r}")
    return ",".join(b for b in BRANCHES if b in names)


def branch_names(branches):
    """``("origin", ...)`` from a branches string (or the default, all six)."""
    return tuple(parse_branches(branches or ALL).split(","))


def params(branches=ALL):
    """The training form's parameter names (besides ``orepa_bias``), by branch, then ``orepa_vector``."""
    return tuple(p for b in branch_names(branches) for p in BRANCH_PARAMS[b]) + ("orepa_vector",)


def internal_channels(in_channels, groups):
    """Width of the 1x1-kxk branch's middle: the input's for groups <= 4, twice it beyond (the original's
    rule, depthwise convs included)."""
    return in_channels if groups <= 4 else 2 * in_channels


def branch_shapes(in_channels, out_channels, kernel_size, groups, branches=ALL, internal=None, expand=EXPAND):
    """``{parameter: shape}`` of an OREPA block's training form (without ``orepa_bias``)."""
    k, cg = kernel_size, in_channels // groups
    t = internal or internal_channels(in_channels, groups)
    names = branch_names(branches)
    shapes = {"orepa_origin": (out_channels, cg, k, k), "orepa_avg": (out_channels, cg, 1, 1),
              "orepa_prior": (out_channels, cg, 1, 1), "orepa_1x1_kxk_idconv1": (t, cg, 1, 1),
              "orepa_1x1_kxk_conv2": (out_channels, t // groups, k, k), "orepa_1x1": (out_channels, cg, 1, 1),
              "orepa_dw": (expand * in_channels, 1, k, k), "orepa_pw": (out_channels, expand * cg, 1, 1),
              "orepa_vector": (len(names), out_channels)}
    return {name: shapes[name] for name in params(branches)}


def initial_arrays(shapes, init="paper", seed=0, origin=None):
    """Starting values of the parameters of ``shapes`` (numpy, ``origin``'s dtype or float32): the
    original's Kaiming-uniform kernels (bound sqrt(6 / fan_in)), ``origin`` if given, the 1x1-kxk
    branch's first conv at the identity (its delta 0) and the branch scales of ``init`` (:data:`INITS`)
    for the branches present.  ``seed``: an int, or a string (a block's name)."""
    if isinstance(seed, str):
        seed = zlib.crc32(seed.encode())
    rng = np.random.default_rng(seed)
    dtype = np.float32 if origin is None else np.asarray(origin).dtype
    present = [b for b in BRANCHES if BRANCH_PARAMS[b][0] in shapes]
    out = {}
    for name, shape in shapes.items():
        if name == "orepa_vector":
            value = np.repeat(np.asarray([INITS[init][b] for b in present], np.float64)[:, None], shape[1], 1)
        elif name == "orepa_1x1_kxk_idconv1":
            value = np.zeros(shape)
        elif name == "orepa_origin" and origin is not None:
            value = np.asarray(origin)
        else:
            bound = np.sqrt(6.0 / int(np.prod(shape[1:])))
            value = rng.uniform(-bound, bound, shape)
        out[name] = np.asarray(value, dtype)
    return out


def _shapes_of(info):
    """The shapes of the block a layout entry (its ``reparam_info``) describes."""
    return branch_shapes(info["in_channels"], info["out_channels"], info["kernel_size"], info["groups"],
                         info["branches"], info["internal"], info["expand"])


def generated_kernel(arrays, groups):
    """The kernel (and nothing else) that the branch parameters ``arrays`` ({parameter: array}, the
    block's own names) generate, in the origin's dtype (:func:`acnet_ms.kinds.orepa.fold.fold_orepa`)."""
    branches = {}
    for branch in BRANCHES:
        if all(p in arrays for p in BRANCH_PARAMS[branch]):
            values = tuple(arrays[p] for p in BRANCH_PARAMS[branch])
            branches[branch] = values if len(values) > 1 else values[0]
    dtype = np.asarray(branches["origin"]).dtype
    return fold.fold_orepa(branches, arrays[MARKER[1:]], groups=groups).astype(dtype)
