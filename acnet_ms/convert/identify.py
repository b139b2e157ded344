"""What a checkpoint is: its model, class count and block kind (with options), from what it records,
what is given and what its entries show.  Every problem is a :class:`acnet_ms.cli.UserError` naming the file.
"""
from .. import kinds
from ..cli import UserError
from ..models import model_entry
from ..models.factory import num_classes_of, recorded_block
from ..models.registry import model_hint
from ..reparam import state as state_map


def resolve_model(meta, model, path):
    """The model name: the one given, else the one recorded in the checkpoint."""
    name = model or meta.get("model")
    if not name:
        raise UserError(f"{path}: the checkpoint does not record its model; pass --model NAME or --config CFG "
                        f"({model_hint(path)})")
    try:
        model_entry(name)
    except ValueError as err:
        raise UserError(str(err)) from None
    return name


def classes_of(model, state, meta, num_classes=None, fallback=None, path=""):
    """The class count: the one recorded (``num_classes`` given must agree), else the one given, else
    ``fallback``'s (a config's), else the one the model's classifier entries in ``state`` show (dense or
    conv classifier alike); None if none of those tells."""
    recorded = meta.get("num_classes")
    if recorded and num_classes and recorded != num_classes:
        raise UserError(f"{path}: --num_classes {num_classes}, but the checkpoint records {recorded} classes")
    return (recorded or num_classes or (fallback or {}).get("num_classes")
            or num_classes_of(model, state_map.network_entries(state)))


def _check_agreement(kind, given, known, source, path):
    """UserError if an option ``given`` differs, once checked, from what the checkpoint tells (``known``)."""
    checked = kind.check_options(given)
    differ = [k for k in (given or {}) if k in known and checked[k] != known[k]]
    if differ:
        raise UserError(f"{path}: block option '{differ[0]}' is {checked[differ[0]]!r} in the options given, "
                        f"but {source} {known[differ[0]]!r}")


def _recorded(meta, block_type, block_options, path):
    """``(block_type, options)`` the metadata records; those given must agree."""
    recorded, options = recorded_block(meta)
    if block_type and block_type != recorded:
        raise UserError(f"{path}: --block_type {block_type}, but the checkpoint records {recorded}")
    _check_agreement(kinds.get_kind(recorded), block_options, options, "the checkpoint records", path)
    return recorded, options


def _shown(state, block_type, block_options, path, log):
    """``(block_type, options)`` the entries show, the rest from ``block_options`` or the defaults (said)."""
    found, shown, unseen = state_map.infer_block(state)
    if found == kinds.BASE:
        return kinds.BASE, {}
    if block_type and block_type != found:
        raise UserError(f"{path}: --block_type {block_type}, but the checkpoint holds {found} blocks")
    kind = kinds.get_kind(found)
    _check_agreement(kind, block_options, shown, "the checkpoint's entries show", path)
    options = kind.check_options(dict(block_options or {}, **shown))
    assumed = [k for k in unseen if k not in (block_options or {})]
    if assumed:
        log(f"{path}: the checkpoint records no block options; assumed the defaults "
            f"{', '.join(f'{k}={options[k]!r}' for k in assumed)} (pass --block_options to say otherwise)")
    return kind.name, options


def block_of(state, meta, block_type=None, block_options=None, path="", log=print):
    """``(block_type, options)`` of a training checkpoint's blocks.

    What the metadata records wins; ``block_type``/``block_options`` given
    must agree with it.  A checkpoint that records nothing (saved by
    ``mindspore.save_checkpoint`` in a loop of one's own, or by MindCV's
    trainer): the kind is the one whose blocks its entries hold, the options
    the entries show are read from them, the others come from
    ``block_options``, and those still absent take the kind's defaults, said
    in one line through ``log``.
    """
    try:
        if meta.get("block_type") and meta["block_type"] != kinds.BASE:
            return _recorded(meta, block_type, block_options, path)
        return _shown(state, block_type, block_options, path, log)
    except ValueError as err:
        raise UserError(f"{path}: {err}") from None
