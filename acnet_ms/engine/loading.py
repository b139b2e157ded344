"""A checkpoint's arrays for a built network: adapted to its form (folded or turned into blocks), and the
finetuning start (``ckpt_path`` in train.py).

Reading and writing the files is :mod:`acnet_ms.io.checkpoint`'s; what maps
onto what is :mod:`acnet_ms.reparam.state`'s, through the kind table.
"""
from ..cli import UserError
from ..io.checkpoint import read_checkpoint
from ..models.factory import layout_for
from ..reparam import state as state_map
from ..reparam.record import record_of
from ..reparam.transform import block_layout


def net_state(state, net, meta=None):
    """Adapt a checkpoint's arrays to ``net``'s block type, by the fold identities.

    Optimizer state is dropped.  A training-form checkpoint (re-parameterizable
    blocks) loaded into a plain model is folded (where the blocks' folds go: its
    metadata, or the block form of ``net``'s model); a plain checkpoint loaded
    into a model with blocks turns each conv + BN into a block that computes
    the same function (each kind's ``from_plain``, :func:`state.plain_to_blocks`).
    A checkpoint of a model's own blocks (a native kind's: MindCV's RepVGG)
    loaded into that model's deploy form has them folded too.
    """
    arrays = state_map.network_entries(state)
    mine = block_layout(net)
    record = record_of(net)
    if state_map.block_prefixes(arrays) and not mine:
        layout = layout_for(record.model, record.num_classes, meta or {}, state=arrays) if record.model else None
        if not layout:
            raise ValueError("a checkpoint with re-parameterizable blocks, but where their folds go is unknown "
                             "(no model recorded)")
        arrays, _ = state_map.fold_state(arrays, layout)
    elif mine:
        arrays = state_map.plain_to_blocks(arrays, mine)
    if record.native_blocks and state_map.find_blocks(arrays, native=True):
        arrays, _ = state_map.fold_state(arrays, record.native_blocks)
    return arrays


def load_pretrained(net, path, log=print):
    """Finetuning start: load every parameter of ``path`` that matches ``net`` by name and shape.

    Parameters whose shape differs (a classifier for another number of
    classes) are skipped and named in the log; so are the parameters the
    checkpoint lacks.  Returns the names loaded.
    """
    import mindspore as ms

    arrays, meta = read_checkpoint(path)
    if meta.get("deploy"):
        raise UserError(f"{path}: a fully folded checkpoint (convert.py --fold_bn) has no BatchNorm left to "
                        f"train; start from the checkpoint it was converted from")
    try:
        state = net_state(arrays, net, meta)
    except ValueError as err:
        raise UserError(f"{path}: {err}") from None
    loaded, skipped, absent = [], [], []
    for param in net.get_parameters():
        value = state.get(param.name)
        if value is None:
            absent.append(param.name)
        elif tuple(value.shape) != tuple(param.shape):
            skipped.append(f"{param.name} {list(value.shape)} (model: {list(param.shape)})")
        else:
            param.set_data(ms.Tensor(value.astype(ms.dtype_to_nptype(param.dtype))))
            loaded.append(param.name)
    if not loaded:
        raise UserError(f"{path}: no parameter matches the model by name and shape")
    log(f"loaded {len(loaded)} of {len(loaded) + len(skipped) + len(absent)} parameters from {path}")
    if skipped:
        log(f"skipped (shape differs): {', '.join(skipped)}")
    if absent:
        log(f"not in the checkpoint, kept as initialised: {len(absent)} ({', '.join(absent[:4])}"
            f"{', ...' if len(absent) > 4 else ''})")
    return loaded
