"""One factory builds every model for every entry point: plain, with a block kind, or fully folded.

The plain network comes from the table (:mod:`.registry`); a block kind's
form and the fully folded form are made from it by :mod:`acnet_ms.reparam.transform`,
which learns the conv/BN structure from the network itself, so any CNN gets
them the same way.  Every built network carries its record, ``net.acnet``
(:class:`acnet_ms.reparam.record.BuildRecord`).
"""
from .. import kinds
from ..cli import first_line
from ..reparam.record import BuildRecord, set_record
from ..reparam.state import infer_block
from ..reparam.layout import Layout
from ..reparam.transform import block_layout, summary_line, to_blocks, to_fused, to_native_deploy, trace
from .registry import model_entry

#: input sizes tried, in order, when tracing a model's structure (small first: it is faster)
TRACE_SIZES = (64, 224, 299)

_SITES = {}


def structure(name, net, kwargs, form="plain"):
    """The traced conv/BN structure (``transform.trace``) of model ``name`` built as ``net`` with
    ``kwargs`` (cached per process and ``form``: the structure does not depend on the weights)."""
    in_channels = kwargs.get("in_channels", 3)
    key = (name, form, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
    if key not in _SITES:
        sizes = (32,) if model_entry(name).family == "cifar" else TRACE_SIZES
        errors = []
        for size in sizes:
            try:
                _SITES[key] = trace(net, (1, in_channels, size, size))
                break
            except (RuntimeError, ValueError, TypeError, AssertionError) as err:  # models assert their input size
                errors.append(f"{size}x{size}: {first_line(err)}")
        else:
            raise ValueError(f"{name}: cannot run a forward pass to learn its structure ({'; '.join(errors)})")
    return _SITES[key]


def flat_keys():
    """The older flat option keys of every kind (``gamma_init``, ``acb_branches``, ...)."""
    return {key for name in kinds.kind_names() for key in kinds.get_kind(name).flat}


def create_model(name, num_classes=None, block_type="base", block_options=None, deploy=False, **kwargs):
    """Build model ``name`` (ours or MindCV's).

    Args:
        num_classes: classifier outputs; ``None`` takes the model's default
            (1000 for the ImageNet models, 10 for the CIFAR ones).
        block_type: ``"base"`` (the plain model; for MindCV names exactly
            MindCV's) or a block kind (``"acb"``: every square k x k conv with
            1 < k < 7 an ACB where the model allows it); ``net.acnet`` and
            :func:`acnet_ms.block_summary` tell which convs became blocks.
        block_options: the kind's options (``acb``: ``branches``,
            ``branch_bn``, ``position``, ``gamma_init``; see ``docs/models.md``).
            The older flat keywords (``acb_branches=...``) still work.
        deploy: the fully folded inference form of the base model: every
            conv + BN is one conv with bias under the conv's name, every BN
            slot an ``nn.Identity`` (``convert.py --fold_bn`` writes its
            checkpoints).  A model with re-parameterizable blocks of its own
            (a native kind's: MindCV's ``repvgg_*``) runs each as one conv
            with bias, as its own deploy form does (``stage1.0.rbr_reparam``;
            ``net.acnet.native_blocks``).
            Needs ``block_type="base"``; ValueError otherwise.
        **kwargs: passed to the model (``in_channels``, MindCV's ``drop_rate``, ...).
    """
    entry = model_entry(name)
    flat = {k: kwargs.pop(k) for k in list(kwargs) if k in flat_keys()}
    block_type, options = kinds.check_block(block_type, block_options, flat)
    if deploy and block_type != kinds.BASE:
        raise ValueError(f"deploy=True builds the fully folded form (convs with bias, no BN, no block): "
                         f"block_type must be 'base', got {block_type!r}")
    if num_classes is None:
        num_classes = entry.num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    net = entry.builder(num_classes=num_classes, **kwargs)
    if block_type != kinds.BASE:
        check_own_blocks(name, net, kinds.get_kind(block_type))
    record = set_record(net, BuildRecord(model=name, num_classes=num_classes, kwargs=dict(kwargs)))
    if block_type == kinds.BASE and not deploy:
        return net
    if deploy:  # the model's own blocks (a native kind's) become their deploy conv first
        record.native_blocks = to_native_deploy(net)
    form = "native deploy" if record.native_blocks else "plain"
    sites = structure(name, net, dict(kwargs, num_classes=num_classes), form)
    if deploy:
        record.fused_pairs = to_fused(net, sites)
        return net
    to_blocks(net, sites, block_type, options)
    if not record.blocks:
        label = kinds.get_kind(block_type).label
        article = "an" if label[:1].lower() in "aeiou" else "a"
        raise ValueError(f"{name} has no k x k conv that can become {article} {label} ({summary_line(net)}); "
                         f"use block_type 'base'")
    return net


def check_own_blocks(name, net, kind):
    """ValueError where model ``name``'s own blocks (a native kind's: MindCV's RepVGG) are of ``kind``'s family:
    a block of it inside each would train the same branches twice."""
    if kind.family is None:
        return
    for native in map(kinds.get_kind, kinds.kind_names(native=True)):
        found = native.model_blocks(net) if native.family == kind.family else ()
        if found:
            others = [k for k in kinds.kind_names() if kinds.get_kind(k).family != kind.family]
            raise ValueError(f"{name}'s own blocks are {len(found)} {native.label}s, the family of block_type "
                             f"{kind.name}: it would put a {kind.label} inside each; train {name} with block_type "
                             f"base (its blocks fold on convert) or {', '.join(others)}")


def recorded_block(meta):
    """``(block_type, options)`` a checkpoint's metadata records (its ``block_options``, or the older flat
    keys), checked, defaults filled in; ``("base", {})`` when it records none."""
    block_type = meta.get("block_type") or kinds.BASE
    if block_type == kinds.BASE:
        return kinds.BASE, {}
    return kinds.check_block(block_type, meta.get("block_options"), meta)


def layout_for(model, num_classes, meta, in_channels=3, state=None):
    """The block :class:`~acnet_ms.reparam.layout.Layout` of a training checkpoint of ``model``: the one its
    metadata records (``block_layout``, either schema; ``acb_layout`` in older checkpoints), else the layout of
    the model built with the block type and options it records, else (given its entries, ``state``) with the
    kind and options its entries show (:func:`acnet_ms.reparam.state.infer_block`)."""
    for key in ("block_layout", "acb_layout"):
        if meta.get(key):
            return Layout.from_meta(meta[key])
    block_type, options = recorded_block(meta)
    if block_type == kinds.BASE and state is not None:
        block_type, options, _ = infer_block(state)
    kwargs = {"in_channels": in_channels} if in_channels != 3 else {}
    return block_layout(uninitialised_model(model, num_classes, block_type=block_type, block_options=options,
                                            **kwargs))


def checkpoint_forms(model, num_classes, meta=None, state=None, deploy=False, in_channels=3):
    """The :class:`~acnet_ms.reparam.forms.Forms` of a checkpoint of ``model``: its blocks' layout
    (:func:`layout_for`; none for a ``state`` without blocks) and, with ``deploy``, the fully folded model's
    own blocks and conv + BN pairs (from that model, built once)."""
    from ..reparam.forms import Forms
    from ..reparam.state import block_prefixes

    blocks = Layout()
    if state is None or block_prefixes(state):
        blocks = layout_for(model, num_classes, meta or {}, in_channels=in_channels, state=state)
    if not deploy:
        return Forms(blocks)
    kwargs = {"in_channels": in_channels} if in_channels != 3 else {}
    record = uninitialised_model(model, num_classes, deploy=True, **kwargs).acnet
    return Forms(blocks, record.native_blocks, record.fused_pairs)


def uninitialised_model(model, num_classes, **kwargs):
    """The model (plain unless ``kwargs`` say otherwise), its parameters left uninitialised where the
    model allows it.

    Its structure, names and shapes are all a converter and a layout read,
    and an export fills every parameter from the checkpoint: drawing random
    weights first would only cost time (about 0.7 s for sres50, 12 s for
    vgg11, whose dense layers hold 120 M weights).  A model whose ``__init__`` reads
    a parameter's data (EdgeNeXt scales its head's initial weights) cannot be
    built so; it is built the ordinary way instead.
    """
    return build_uninitialised(lambda: create_model(model, num_classes=num_classes, **kwargs))


def build_uninitialised(build):
    """``build()`` (a Cell) with its parameters left uninitialised, for a model whose every parameter is set
    from a checkpoint next; built the ordinary way if its ``__init__`` reads a parameter's data."""
    from mindspore.nn.utils import no_init_parameters

    try:
        with no_init_parameters():
            return build()
    except Exception:  # noqa: BLE001  (whatever reading uninitialised data raises; a real error comes again below)
        return build()


def classifier_entries(model, **kwargs):
    """``{name: axis}``: the plain model's parameters whose shape follows ``num_classes`` (the classifier,
    a dense or a 1 x 1 conv one), and along which axis; found by building the model at two class counts."""
    shapes = [{p.name: tuple(p.shape) for p in uninitialised_model(model, n, **kwargs).get_parameters()}
              for n in (7, 11)]
    out = {}
    for name, a in shapes[0].items():
        b = shapes[1].get(name)
        if b is not None and a != b and len(a) == len(b):
            axes = [i for i, (x, y) in enumerate(zip(a, b)) if (x, y) == (7, 11)]
            if axes:
                out[name] = axes[0]
    return out


def num_classes_of(model, state, **kwargs):
    """The class count of checkpoint dict ``state`` of ``model``, read from the entries the model's
    classifier has (whatever its kind: dense or conv); None if the checkpoint has none of them."""
    import numpy as np

    found = [int(np.shape(state[name])[axis]) for name, axis in classifier_entries(model, **kwargs).items()
             if name in state and np.ndim(state[name]) > axis]
    return found[-1] if found else None
