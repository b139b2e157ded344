"""The papers' published PyTorch weights as checkpoints of MindCV's models: name maps, then folds.

Read (:mod:`acnet_ms.io.pth`, no torch, no pickled code run) -> find the source and its architecture (:func:`pth_source`)
from the entries -> read every conv site as the original computes it (:mod:`.originals`) -> write it under
the MindCV model's names -> check against the model's shapes.  Sources:

* ``torchvision``: ``conv1``/``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``/``.1``, ``fc``;
* ``dbb`` (DingXiaoH/DiverseBranchBlock) and ``orepa`` (JUGGHM/OREPA_CVPR2022): their model zoo's
  ResNets (``stage0.conv1``, ``stage1.0.conv1``, ``stage1.0.shortcut``, ``linear``), ResNeXt and
  MobileNet (``conv1``, ``stem.0.depthwise``/``pointwise``, ``linear``), every conv site a plain ConvBN,
  a DBB, an OREPA block, ``OREPA_1x1`` or ``OREPA_LargeConv``, in training or deploy form;
* ``repvgg`` (DingXiaoH/RepVGG, and OREPA's RepVGG-style models): ``stage0``, ``stage1.0.rbr_dense`` /
  ``rbr_1x1`` / ``rbr_identity`` / ``rbr_reparam``, ``linear``: MindCV's ``repvgg_*`` names, three branches.

A DBB folds into one conv with bias, written as the conv and a BN that adds the bias (``identities.bias_as_bn``);
an OREPA block's generated kernel is the conv and its BN stays.  This package must not import MindSpore.
"""
import re

import numpy as np

from ..._moved import moved_attr as _moved_attr
from ...kinds import identities
from .originals import MapError, Reader, Unit, read_unit, repvgg_unit

SOURCES = ("torchvision", "dbb", "orepa", "repvgg")

#: source prefix patterns -> (target conv, target BN), per architecture
_DING_RESNET = re.compile(r"^(stage0\.conv1|stage(\d+)\.(\d+)\.(conv\d|shortcut))\.")
_DING_MOBILENET = re.compile(r"^(conv1|stem\.(\d+)\.(depthwise|pointwise))\.")
_REPVGG = re.compile(r"^(stage0|stage(\d+)\.(\d+))\.rbr_")
_TORCHVISION = re.compile(r"^(conv1|layer(\d+)\.(\d+)\.(conv\d|downsample\.0))\.weight$")


#: what the summary line calls a source (its repository), an architecture and each form of a block read
SOURCE_WORDS = {"torchvision": "torchvision", "dbb": "DingXiaoH/DiverseBranchBlock",
                "orepa": "JUGGHM/OREPA_CVPR2022", "repvgg": "DingXiaoH/RepVGG"}
ARCH_WORDS = {"resnet": "ResNet", "mobilenet": "MobileNet", "repvgg": "RepVGG", "torchvision_resnet": "ResNet"}
FORM_WORDS = {"convbn": ("conv + BN", "conv + BN"), "dbb": ("DBB", "DBBs"), "orepa": ("OREPA block", "OREPA blocks"),
              "orepa_1x1": ("OREPA 1x1 block", "OREPA 1x1 blocks"),
              "orepa_large": ("OREPA large-kernel block", "OREPA large-kernel blocks"),
              "deploy": ("deploy conv", "deploy convs"),
              "convbn_repvgg": ("RepVGG block (training form)", "RepVGG blocks (training form)"),
              "orepa_repvgg": ("RepVGG block with an OREPA 3x3 branch", "RepVGG blocks with an OREPA 3x3 branch")}


def describe(info):
    """``a ResNet of torchvision: 20 conv + BN``: the source, architecture and forms of :func:`to_mindcv`'s
    ``info`` in words (a ResNet in the DBB/OREPA repositories' names whose blocks are all conv + BN is a plain
    one)."""
    forms = info["forms"]
    source, arch = info["source"], ARCH_WORDS.get(info["architecture"], info["architecture"])
    if source in ("dbb", "orepa") and not set(forms) - {"convbn"}:
        head = f"a plain {arch} in the DBB/OREPA repositories' names"
    else:
        head = f"a {arch} of {SOURCE_WORDS.get(source, source)}"
    words = ", ".join(f"{n} {FORM_WORDS.get(f, (f, f))[n > 1]}"
                      for f, n in sorted(forms.items(), key=lambda item: -item[1]))
    return f"{head}: {words}"


def pth_source(state):
    """``(source, architecture)`` from a PyTorch state dict's entries; MapError if none fits.

    architecture: ``resnet`` (the Ding/OREPA zoo), ``mobilenet``, ``repvgg`` or ``torchvision_resnet``."""
    names = list(state)
    if any(_REPVGG.match(n) for n in names):
        source = "orepa" if any(".weight_rbr_" in n for n in names) else "repvgg"
        return source, "repvgg"
    marks = {"orepa": ("weight_orepa_", "weight_or1x1_", "orepa_reparam", "or1x1_reparam", "or_large_reparam"),
             "dbb": ("dbb_origin", "dbb_reparam")}
    source = next((s for s, keys in marks.items() if any(k in n for n in names for k in keys)), None)
    if any(_DING_RESNET.match(n) for n in names):
        return source or "dbb", "resnet"
    if any(_DING_MOBILENET.match(n) for n in names) and "linear.weight" in state:
        return source or "dbb", "mobilenet"
    if "fc.weight" in state and any(_TORCHVISION.match(n) for n in names):
        return "torchvision", "torchvision_resnet"
    shown = ", ".join(names[:3])
    raise MapError(f"entries of no known source (torchvision, DBB, OREPA or RepVGG models): {shown}, ...")


def _sites(state, arch):
    """``[(source prefix, target conv, target BN)]`` of every conv site, in the state's order."""
    out, seen = [], set()
    for name in state:
        if arch == "resnet":
            m = _DING_RESNET.match(name)
            if not m:
                continue
            p = m.group(1)
            if p == "stage0.conv1":
                site = (p, "conv1", "bn1")
            else:
                s, i, what = m.group(2), m.group(3), m.group(4)
                block = f"layer{s}.{i}"
                site = (p, f"{block}.down_sample.0", f"{block}.down_sample.1") if what == "shortcut" else \
                    (p, f"{block}.{what}", f"{block}.bn{what[-1]}")
        elif arch == "mobilenet":
            m = _DING_MOBILENET.match(name)
            if not m:
                continue
            p = m.group(1)
            if p == "conv1":
                site = (p, "features.0", "features.1")
            else:
                idx, off = int(m.group(2)) + 3, (0 if m.group(3) == "depthwise" else 3)
                site = (p, f"features.{idx}.{off}", f"features.{idx}.{off + 1}")
        elif arch == "torchvision_resnet":
            m = _TORCHVISION.match(name)
            if not m:
                continue
            p = m.group(1)
            bn = "bn1" if p == "conv1" else (p[:-1] + "1" if p.endswith("downsample.0") else
                                              p.rsplit(".", 1)[0] + ".bn" + p[-1])
            site = (p, p.replace("downsample", "down_sample"), bn.replace("downsample", "down_sample"))
        else:
            m = _REPVGG.match(name)
            if not m:
                continue
            site = (m.group(1), m.group(1), None)
        if site[0] not in seen:
            seen.add(site[0])
            out.append(site)
    return out


def _f32(a):
    a = np.asarray(a)
    return a.astype(np.float32) if a.dtype.kind == "f" else a


def _bn_entries(prefix, bn):
    return {f"{prefix}.{f}": _f32(v) for f, v in zip(identities.BN_FIELDS, bn)}


def _emit(unit, conv, bn):
    """MindCV entries of one site: ``conv.weight`` and the BN ``bn`` (the unit's own, or one adding its bias)."""
    out = {f"{conv}.weight": _f32(unit.kernel)}
    if unit.bn is not None:
        out.update(_bn_entries(bn, unit.bn))
    else:
        bias = np.zeros(np.shape(unit.kernel)[0]) if unit.bias is None else unit.bias
        out.update({f"{bn}.{f}": _f32(v) for f, v in identities.bias_as_bn(_f32(bias)).items()})
    return out


def _emit_repvgg(branches, prefix, shapes):
    """MindCV's three-branch RepVGG block at ``prefix`` (``rbr_dense.0``/``.1``, ``rbr_1x1.0``/``.1``,
    ``rbr_identity``).  A deploy block goes into ``rbr_dense`` (its bias as the BN's shift); its other
    branches then add exactly zero (BN gamma and beta 0)."""
    out = {}
    if branches["deploy"] is not None:
        unit = branches["deploy"]
        out.update(_emit(unit, f"{prefix}.rbr_dense.0", f"{prefix}.rbr_dense.1"))
        o, c = np.shape(unit.kernel)[:2]
        out[f"{prefix}.rbr_1x1.0.weight"] = np.zeros((o, c, 1, 1), np.float32)
        zero = (np.zeros(o), np.zeros(o), np.zeros(o), np.ones(o))
        out.update(_bn_entries(f"{prefix}.rbr_1x1.1", zero))
        if f"{prefix}.rbr_identity.gamma" in shapes:
            out.update(_bn_entries(f"{prefix}.rbr_identity", zero))
        return out
    out.update(_emit(branches["dense"], f"{prefix}.rbr_dense.0", f"{prefix}.rbr_dense.1"))
    if branches["1x1"] is not None:
        out.update(_emit(branches["1x1"], f"{prefix}.rbr_1x1.0", f"{prefix}.rbr_1x1.1"))
    if branches["identity"] is not None:
        out.update(_bn_entries(f"{prefix}.rbr_identity", branches["identity"]))
    return out


#: a MindCV parameter each architecture's target has
_TARGET_MARK = {"resnet": "layer1.0.conv1.weight", "torchvision_resnet": "layer1.0.conv1.weight",
                "mobilenet": "features.0.weight", "repvgg": "stage0.rbr_dense.0.weight"}
#: the classifier: source name -> target name
_CLASSIFIER = {"resnet": ("linear", "classifier"), "mobilenet": ("linear", "classifier"),
               "repvgg": ("linear", "linear"), "torchvision_resnet": ("fc", "classifier")}


def classes_in(state, arch=None):
    """The class count the state dict's classifier has (None if it has none)."""
    arch = arch or pth_source(state)[1]
    weight = state.get(f"{_CLASSIFIER[arch][0]}.weight")
    return None if weight is None else int(np.shape(weight)[0])


def to_mindcv(state, shapes, source=None, model="the model", keep=None, finish=None):
    """A PyTorch state dict of a known source as the entries of the MindCV model whose parameter shapes are
    ``shapes`` (name -> shape).

    ``source``: one of :data:`SOURCES` (checked against what the entries show) or None (identified).
    ``keep(unit, conv, bn)``: optional; for each conv site, entries to write instead of the folded ones
    (a kind's training form), or None; ``finish(entries)``: optional, the entries' last change before
    they are checked (plain convs into a kind's blocks).  Returns ``(entries, info)`` with ``info`` the source, the
    architecture and the forms of the blocks read (``{"dbb": 16, "convbn": 5}``; a RepVGG block in training form
    is ``convbn_repvgg``, or ``orepa_repvgg`` where its 3 x 3 branch is OREPA's; :data:`FORM_WORDS`).  MapError (one line,
    naming the entry) for entries no map places, or a result that does not fit ``shapes``.
    """
    from ...io.checkpoint import mismatch

    found, arch = pth_source(state)
    if source is not None and source != found and not (source == "orepa" and found == "repvgg"):
        raise MapError(f"--source {source}, but the entries are {found}'s ({next(iter(state))}, ...)")
    mark = _TARGET_MARK[arch]
    if not any(n == mark or n.startswith(mark[: -len("weight")]) for n in shapes):  # a block's entries count
        raise MapError(f"the .pth holds a {arch.replace('_', ' ')} ({next(iter(state))}, ...), but {model} "
                       f"has no '{mark}': choose a model of that architecture")
    r = Reader(state)
    out, forms = {}, {}
    for p, conv, bn in _sites(state, arch):
        if arch == "repvgg":
            branches = repvgg_unit(r, p)
            form = "deploy" if branches["deploy"] is not None else f"{branches['dense'].form}_repvgg"
            out.update(_emit_repvgg(branches, conv, shapes))
        else:
            if arch == "torchvision_resnet":  # a plain conv, its BN beside it
                before = set(r.used)
                unit = Unit(r.get(f"{p}.weight"), bn=r.bn(bn.replace("down_sample", "downsample")), form="convbn")
                unit.consumed = sorted(r.used - before)
            else:
                unit = read_unit(r, p)
            form = unit.form
            kept = keep(unit, conv, bn) if keep else None
            out.update(kept if kept is not None else _emit(unit, conv, bn))
        forms[form] = forms.get(form, 0) + 1
    src, dst = _CLASSIFIER[arch]
    out[f"{dst}.weight"] = _f32(r.get(f"{src}.weight"))
    out[f"{dst}.bias"] = _f32(r.get(f"{src}.bias"))
    left = [n for n in state if n not in r.used and not n.endswith("num_batches_tracked")]
    if left:
        raise MapError(f"entry '{left[0]}' ({len(left)} in all) has no place in {model}'s map from {found}")
    if finish is not None:
        out = finish(out)
    problem = mismatch(out, shapes)
    if problem:
        raise MapError(f"does not fit {model}: {problem}")
    return out, dict(source=found, architecture=arch, forms=forms)


__all__ = ["SOURCES", "SOURCE_WORDS", "ARCH_WORDS", "FORM_WORDS", "MapError", "Unit", "classes_in", "describe",
           "pth_source", "to_mindcv"]

__getattr__ = _moved_attr(__name__)  # identify is pth_source (0.2.0)
