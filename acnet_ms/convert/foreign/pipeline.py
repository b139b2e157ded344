"""``convert.py --ckpt_path X.pth``: a published PyTorch checkpoint as a checkpoint of a MindCV model.

:func:`import_pth` is the conversion pipeline's reader of PyTorch files (:mod:`acnet_ms.convert.pipeline`):
read (:func:`acnet_ms.io.pth.read_pth`) -> find the source (:func:`acnet_ms.convert.foreign.pth_source`, or
``--source``) -> map and fold into the model's names (:func:`acnet_ms.convert.foreign.to_mindcv`), checked
against the model's shapes, with metadata saying what it is.  The pipeline writes that checkpoint (or folds
it on, ``--fold_bn``, and exports it).  With ``block_type`` the result is our kind's training form instead
(where the original's blocks are that kind's: DBB's into ``dbb``), to finetune; every other conv site of the
model that kind takes starts as the plain conv it was.
"""
import os

from .. import foreign
from ..._moved import moved_attr as _moved_attr
from ...cli import UserError
from ...io.pth import PthError, read_pth

#: suffixes taken for PyTorch files
PTH_SUFFIXES = (".pth", ".pt", ".pth.tar", ".bin")


def is_pth(path):
    """Whether ``path`` names a PyTorch file (by its suffix)."""
    return str(path).lower().endswith(PTH_SUFFIXES)


def _kind_keeper(layout):
    """``keep`` for :func:`acnet_ms.convert.foreign.to_mindcv`: a DBB of the original at a site of our ``dbb`` layout keeps its
    branches, under the site's name and MindSpore's BN fields (the Cell uses the original's names)."""
    from ...kinds.dbb.kind import rename_torch_state
    from . import _f32

    def keep(unit, conv, bn):
        if unit.form != "dbb" or conv not in layout:
            return None
        return {f"{conv}.{name}": _f32(v) for name, v in rename_torch_state(unit.raw).items()}
    return keep


def block_finisher(net, layout):
    """``finish`` for :func:`acnet_ms.convert.foreign.to_mindcv` into a kind's training form: the plain convs the kind takes
    become its blocks computing the same function (the kind's ``from_plain``); the block parameters that
    function leaves open (the new branches' kernels and inner BNs, whose output the zeroed last BN
    cancels) keep ``net``'s initial values, so that finetuning moves them."""
    from ...reparam.forms import TRAINING, Forms

    initial = {p.name: p for p in net.get_parameters()}
    forms = Forms(layout)

    def finish(entries):
        out = forms.move(entries, TRAINING).state
        for name, param in initial.items():
            if name not in out and any(name.startswith(prefix + ".") for prefix in layout):
                out[name] = param.asnumpy()
        return out
    return finish


def _check_request(src, model, source):
    """UserError for what a ``.pth`` import cannot start without: a known ``--source`` (or none), a MindCV
    model (a PyTorch file records none)."""
    from ...models.registry import model_entry

    if source is not None and source not in foreign.SOURCES:
        raise UserError(f"--source must be one of {', '.join(foreign.SOURCES)}, got {source!r}")
    if not model:
        raise UserError(f"{src}: a .pth records no MindCV model: pass --model (resnet18, resnet50, "
                        f"resnext50_32x4d, mobilenet_v1_100, repvgg_a0, ...)")
    try:
        model_entry(model)
    except (KeyError, ValueError) as err:
        raise UserError(f"--model {model}: {str(err).strip(chr(34)).strip(chr(39))}") from None


def import_pth(src, model=None, source=None, block_type=None, num_classes=None, log=print):
    """The reader of a PyTorch file: ``(entries, meta, info)``, the ``.pth`` ``src`` as a checkpoint of the MindCV
    ``model`` in memory, checked against its shapes: the stock model's entries, or with ``block_type`` that
    kind's training form (to finetune).  ``meta`` records what it is, as a training checkpoint's metadata
    does; ``info`` what was read (:func:`acnet_ms.convert.foreign.to_mindcv`).  UserError in one line."""
    from ...models.factory import create_model, uninitialised_model
    from ...reparam.transform import block_layout

    _check_request(src, model, source)
    try:
        state = read_pth(src)
        found, arch = foreign.pth_source(state)
    except (PthError, foreign.MapError) as err:
        raise UserError(f"{src}: {err}") from None
    classes = foreign.classes_in(state, arch)
    if num_classes is not None and classes is not None and num_classes != classes:
        raise UserError(f"{src}: --num_classes {num_classes}, but its classifier has {classes} classes")
    classes = classes or num_classes
    keep = finish = None
    kind = block_type or "base"
    try:
        if kind == "base":
            net = uninitialised_model(model, classes)
        else:
            net = create_model(model, num_classes=classes, block_type=kind)
    except ValueError as err:
        raise UserError(f"{model}: {err}") from None
    shapes = {p.name: tuple(p.shape) for p in net.get_parameters()}
    if kind != "base":
        layout = block_layout(net)
        if kind == "dbb":
            keep = _kind_keeper(layout)
        elif found == kind and arch != "repvgg":
            log(f"{src}: the original's {found} blocks are read as the convs they fold into (only DBB's load "
                f"branch for branch): each {kind} block starts as its folded conv")
        elif found in ("dbb", "orepa") and arch != "repvgg":
            log(f"{src}: {found}'s blocks are not {kind}'s: they are folded, and each {kind} block starts "
                f"as the folded conv")

        finish = block_finisher(net, layout)
    try:
        entries, info = foreign.to_mindcv(state, shapes, source=source, model=model, keep=keep, finish=finish)
    except foreign.MapError as err:
        raise UserError(f"{src}: {err}") from None
    meta = dict(model=model, num_classes=classes, block_type=kind, source=info["source"],
                source_file=os.path.basename(src))
    if kind != "base":
        meta.update(block_options=net.acnet.block_options, block_layout=layout.to_meta())
    return entries, meta, info


def _imported_line(src, dst, info, meta, count):
    """The log line of a ``.pth`` imported and written as it is: what it was, what it became."""
    kind = meta["block_type"]
    return (f"{src}: {foreign.describe(info)} -> {dst}: {meta['model']}"
            f"{'' if kind == 'base' else f' with {kind} blocks'}, {count} parameters, {meta['num_classes']} classes")


# convert_pth, the conversion of a .pth, is the pipeline's now (acnet_ms.convert.pipeline; acnet_ms/_moved.py)
__getattr__ = _moved_attr(__name__)
