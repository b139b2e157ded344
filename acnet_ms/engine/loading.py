"""A checkpoint's arrays for a built network: adapted to its form (folded or turned into blocks), and the
finetuning start (``ckpt_path`` in train.py).

Reading and writing the files is :mod:`acnet_ms.io.checkpoint`'s; what maps
onto what is :mod:`acnet_ms.reparam.state`'s, through the kind table.
"""
from dataclasses import replace

from ..cli import UserError
from ..io.checkpoint import read_checkpoint
from ..models.factory import layout_for
from ..reparam import state as state_map
from ..reparam.forms import TRAINING
from ..reparam.record import record_of
from ..reparam.transform import block_layout, network_forms


def net_state(state, net, meta=None):
    """Adapt a checkpoint's arrays to ``net``'s block type, by the fold identities.

    Optimizer state is dropped.  A training-form checkpoint (re-parameterizable
    blocks) loaded into a plain model is folded (where the blocks' folds go: its
    metadata, or the block form of ``net``'s model); a plain checkpoint loaded
    into a model with blocks turns each conv + BN into a block that computes
    the same function (each kind's ``from_plain``, :func:`state.plain_to_blocks`).
    A checkpoint of a model's own blocks (a native kind's: MindCV's RepVGG)
    loaded into that model's deploy form has them folded too, and the BatchNorms
    it still holds after a conv.  One move, :meth:`acnet_ms.reparam.forms.Forms.move`,
    to ``net``'s form.
    """
    arrays = state_map.network_entries(state)
    forms, form = network_forms(net)
    record = record_of(net)
    if form != TRAINING and state_map.block_prefixes(arrays):
        layout = layout_for(record.model, record.num_classes, meta or {}, state=arrays) if record.model else None
        if not layout:
            raise ValueError("a checkpoint with re-parameterizable blocks, but where their folds go is unknown "
                             "(no model recorded)")
        forms = replace(forms, blocks=layout)
    return forms.move(arrays, form).state


def _source_entry(name, original, blocks):
    """The checkpoint entry a block parameter ``name`` was made from by the block conversion (same block,
    same last name: ``conv1.weight`` for ``conv1.square_conv.weight``), or None."""
    if name in original:
        return None
    block = next((b for b in blocks if name.startswith(b)), None)
    last = "." + name.rsplit(".", 1)[-1]
    found = [e for e in original if block and e.startswith(block) and e.endswith(last)]
    return found[0] if len(found) == 1 else None


def _conversion_words(converted, state, arrays):
    """`` (N of them set by the block conversion ...: K carry the checkpoint's values, e.g. X from Y; M start a
    branch switched off, e.g. Z)`` for the parameters the block conversion set, or ``""``."""
    if not converted:
        return ""
    import numpy as np

    def key(value):
        value = np.ascontiguousarray(value)
        return value.shape, str(value.dtype), value.tobytes()

    def last(name):
        return name.rsplit(".", 1)[-1]

    stored = {}
    for n, v in arrays.items():
        stored.setdefault(key(v), []).append(n)
    carried = {}
    for name in converted:  # its values are an entry's: one of the same last name, or any if not constant
        value = np.asarray(state[name])
        same = [n for n in stored.get(key(value), ()) if last(n) == last(name)]
        others = stored.get(key(value), []) if value.size > 1 and np.ptp(value) > 0 else []
        if same or others:
            carried[name] = (same or others)[0]
    fresh = [n for n in converted if n not in carried]
    parts = []
    if carried:
        name, source = next(iter(carried.items()))
        parts.append(f"{len(carried)} carry the checkpoint's values, e.g. {name} from {source}")
    if fresh:
        parts.append(f"{len(fresh)} start branches switched off, e.g. {fresh[0]}")
    return (f" ({len(converted)} of them set by the block conversion to keep the pretrained function: "
            f"{'; '.join(parts)})")


def load_pretrained(net, path, log=print, partial=False):
    """Finetuning start: load ``path`` into ``net``, strictly unless ``partial``.

    Strict: every parameter of ``net`` must come from the checkpoint by name and
    shape (a plain checkpoint fills a model's blocks by each kind's ``from_plain``:
    the parameters of a block's added branches that it leaves are kept as initialised
    when the block's own conv loaded); otherwise one UserError says how many matched
    and names the first that did not.  ``partial``: the classifier (the parameters
    whose first dimension is the model's class count) may differ or be missing, and
    keeps its initial values.  The log says what was loaded, what the block
    conversion set (branches started at zero to keep the pretrained function) and
    what was initialised.  Returns the names loaded.
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
    original = set(state_map.network_entries(arrays))
    blocks = tuple(prefix + "." for prefix in block_layout(net))
    params = list(net.get_parameters())
    num_classes = getattr(record_of(net), "num_classes", None)
    matched, problems = [], []
    for param in params:
        value = state.get(param.name)
        if value is None:
            problems.append((param, f"'{param.name}' is not in the checkpoint"))
        elif tuple(value.shape) != tuple(param.shape):
            source = _source_entry(param.name, original, blocks)
            made = f" (made from its '{source}' by the block conversion)" if source else ""
            problems.append((param, f"'{param.name}' has shape {list(value.shape)} in the checkpoint{made}, "
                                    f"{list(param.shape)} in the model"))
        else:
            matched.append(param)
    loaded_blocks = {b for b in blocks for p in matched if p.name.startswith(b)}
    branch_init = {p.name for p, _ in problems if p.name.startswith(blocks) and state.get(p.name) is None
                   and any(p.name.startswith(b) for b in loaded_blocks)}
    head = {p.name for p, _ in problems if num_classes and p.shape and p.shape[0] == num_classes}
    failing = [(p, why) for p, why in problems if p.name not in branch_init and not (partial and p.name in head)]
    names = {p.name for p in params}
    unused = [name for name in state if name not in names]
    if unused and not partial:
        failing.append((None, f"'{unused[0]}' is in the checkpoint, not in the model ({len(unused)} such entries)"))
    model = getattr(record_of(net), "model", None) or type(net).__name__
    if failing or not matched:
        what = failing[0][1] if failing else "no parameter matches by name and shape"
        hint = ("; pass --ckpt_partial True to start the classifier afresh (another num_classes)"
                if failing and not partial and all(p is not None and p.name in head for p, _ in failing) else "")
        recorded = meta.get("model")
        records = f" (it records model {recorded})" if recorded and recorded != model else ""
        raise UserError(f"{path}: the checkpoint{records} does not cover {model}: {len(matched)} of {len(params)} "
                        f"parameters match by name and shape; first that does not: {what}{hint}")
    for param in matched:
        param.set_data(ms.Tensor(state[param.name].astype(ms.dtype_to_nptype(param.dtype))))
    trainer = len(arrays) - len(original)
    skipped = f"; {trainer} optimizer and trainer entries not loaded" if trainer else ""
    log(f"loaded {len(matched)} of {len(params)} parameters from {path} ({len(original)} entries{skipped})"
        + _conversion_words([p.name for p in matched if p.name not in original], state,
                                                    state_map.network_entries(arrays)))
    if branch_init:
        log(f"kept as initialised, branches whose output the conversion switched off: {len(branch_init)} "
            f"({', '.join(sorted(branch_init)[:4])}{', ...' if len(branch_init) > 4 else ''})")
    started = [why for p, why in problems if p.name in head and p.name not in branch_init]
    if started:
        log("classifier initialised afresh (ckpt_partial): " + ", ".join(started))
    if unused:
        log(f"checkpoint entries the model does not have: {len(unused)} ({', '.join(unused[:3])}"
            f"{', ...' if len(unused) > 3 else ''})")
    return [p.name for p in matched]
