"""Checkpoint conversion: a training-form ACB checkpoint becomes a plain-model checkpoint.

File I/O and model identification live here; the arithmetic is
:func:`acnet_ms.fold.fold_state`.
"""
import os
import time

from . import fold
from .checkpoint import read_checkpoint, write_checkpoint
from .cli import UserError


def expected_shapes(model, num_classes):
    """Parameter name -> shape of the plain (``base``) form of ``model``."""
    from .models import create_model

    net = create_model(model, num_classes=num_classes, block_type="base")
    return {p.name: tuple(p.shape) for p in net.get_parameters()}


def check_against(state, shapes, model, path):
    """UserError naming the first parameter of ``state`` that does not fit ``shapes``."""
    for name, shape in shapes.items():
        if name not in state:
            raise UserError(f"{path}: not a checkpoint of {model}: parameter '{name}' "
                            f"(expected shape {list(shape)}) is missing")
        found = tuple(state[name].shape)
        if found != shape:
            raise UserError(f"{path}: not a checkpoint of {model}: parameter '{name}' has shape "
                            f"{list(found)}, expected {list(shape)}")
    extra = [name for name in state if name not in shapes]
    if extra:
        raise UserError(f"{path}: not a checkpoint of {model}: unexpected parameter '{extra[0]}' "
                        f"({len(extra)} in all)")


def resolve_model(meta, model, path):
    """The model name: the one given, else the one recorded in the checkpoint."""
    from .models import list_models, model_entry

    name = model or meta.get("model")
    if not name:
        raise UserError(f"{path}: the checkpoint does not record its model; pass --model NAME or --config CFG "
                        f"(models: {', '.join(list_models())})")
    try:
        model_entry(name)
    except ValueError as err:
        raise UserError(str(err)) from None
    return name


def same_file(a, b):
    if os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def convert_checkpoint(src, dst, model=None, log=print):
    """Fold every ACB of checkpoint ``src`` and write a plain-model checkpoint to ``dst``.

    Returns a summary dict (model, acbs, params_in, params_out, seconds).
    Nothing is written unless the whole result has been checked against the
    plain model's parameter names and shapes.
    """
    start = time.perf_counter()
    if os.path.exists(src) and same_file(src, dst):
        raise UserError(f"{dst}: --output is the input checkpoint; choose another file")
    folder = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(folder):
        raise UserError(f"{dst}: output folder {folder} does not exist")
    state, meta = read_checkpoint(src)
    name = resolve_model(meta, model, src)
    if not fold.acb_prefixes(state):
        raise UserError(f"{src}: no ACB in this checkpoint: it is already plain (nothing to convert)")
    try:
        plain, acbs = fold.fold_state(state)
    except ValueError as err:
        raise UserError(f"{src}: {err}") from None
    classifier = plain.get("classifier.weight")
    num_classes = int(classifier.shape[0]) if classifier is not None else meta.get("num_classes")
    check_against(plain, expected_shapes(name, num_classes), name, src)
    out_meta = {k: v for k, v in meta.items() if k not in ("block_type",)}
    out_meta.update(model=name, block_type="base", num_classes=num_classes, folded_from=os.path.basename(src))
    write_checkpoint(dst, plain, out_meta)
    summary = dict(model=name, acbs=len(acbs), params_in=len(state), params_out=len(plain),
                   seconds=time.perf_counter() - start)
    log(f"{name}: folded {summary['acbs']} ACBs; {summary['params_in']} parameters in, "
        f"{summary['params_out']} out; wrote {dst} in {summary['seconds']:.2f} s")
    return summary
