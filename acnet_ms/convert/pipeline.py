"""Checkpoint conversion as a pipeline: a training-form checkpoint becomes a plain-model one.

    plan_outputs   where the results go, checked before anything is read      -> Outputs
    read           the file's arrays and metadata (a PyTorch file: imported
                   as the MindCV model's checkpoint, acnet_ms.convert.foreign) -> (state, meta)
    identify       model, class count, block kind and options, layout         -> Source
    fold           the blocks (then, fully folded, the model's own blocks
                   and every BatchNorm), checked against the stock model      -> Folded
    export         the graph (MINDIR or ONNX) and its INT8 twin, to temporary files
    write          the checkpoint, then the graphs renamed into place
    report         the summary dict and the log lines

With ``fold_bn`` every BatchNorm is folded too, into a checkpoint of the fully
folded model (``create_model(name, deploy=True)``).  The name mapping is
:func:`acnet_ms.reparam.state.fold_state` and :func:`~acnet_ms.reparam.state.fold_bns`,
through the kind table (a model's own blocks, MindCV's RepVGG's, are a native
kind's); the arithmetic is the kinds'.  Which entries fold into which comes from the model
itself, so every registered model, MindCV's included, converts to the stock model's checkpoint.
"""
import os
import time
from dataclasses import dataclass, field, fields
from typing import Optional

from .. import kinds
from ..kinds.table import check_recorded_kind
from ..cli import UserError
from ..engine.runtime import recorded_model_kwargs
from ..io.checkpoint import mismatch, read_checkpoint, shapes_of, write_checkpoint
from ..models.factory import layout_for, uninitialised_model
from ..reparam import state as state_map
from ..reparam.forms import DEPLOY, STOCK, Forms
from .export import (EXPORT_FORMATS, calibration_recipe, check_int8, export_format, export_graph,  # noqa: F401
                     fit_calibration, graph_path, graph_shape, parse_input_shape, trained_size)
from .foreign.pipeline import is_pth
from .identify import block_of, classes_of, resolve_model  # noqa: F401  (the identify stage's parts)
from .._moved import moved_attr as _moved_attr


@dataclass
class ConvertOptions:
    """What :func:`convert_checkpoint` is told besides the two paths (see its docstring)."""
    model: Optional[str] = None
    num_classes: Optional[int] = None
    block_type: Optional[str] = None
    block_options: Optional[dict] = None
    fallback: dict = field(default_factory=dict)   # the same four keys from a config file
    fold_bn: bool = False
    export: Optional[str] = None
    input_shape: Optional[str] = None
    overwrite: bool = False
    int8: bool = False
    calib_data: Optional[str] = None
    calib_samples: Optional[int] = None
    calib_method: Optional[str] = None
    any_class_names: bool = False
    source: Optional[str] = None   # a .pth's origin (acnet_ms.convert.foreign.SOURCES), else found from its entries

    @classmethod
    def of(cls, options=None, **given):
        """``options`` (a ConvertOptions or None) with the keywords ``given`` set over it; TypeError for a
        keyword that is no option."""
        unknown = [k for k in given if k not in {f.name for f in fields(cls)}]
        if unknown:
            raise TypeError(f"convert_checkpoint() got an unexpected keyword argument {unknown[0]!r}")
        base = {f.name: getattr(options, f.name) for f in fields(cls)} if options is not None else {}
        out = cls(**dict(base, **given))
        out.fallback = dict(out.fallback or {})
        return out


@dataclass
class Outputs:
    """Where a conversion writes: the checkpoint, and the graph and its INT8 twin if asked for."""
    checkpoint: str
    fmt: Optional[str] = None
    shape: Optional[tuple] = None
    graph: Optional[str] = None
    int8: Optional[str] = None


@dataclass
class Source:
    """What the checkpoint is: its arrays and record, model, classes, kind, and which blocks it holds."""
    path: str
    state: dict
    meta: dict
    model: str
    num_classes: int
    kind: str
    options: dict
    blocks: list      # prefixes of its blocks of a block kind
    own: dict         # the model's own blocks it holds (a native kind's): {prefix: kind name}
    fully: bool       # the result is the fully folded model (fold_bn, or nothing else to fold)
    calibration: Optional[tuple] = None   # (recipe, data spec) for --int8
    imported: bool = False   # read from a PyTorch file: its import is a conversion already


@dataclass
class Folded:
    """The converted arrays in the target model's order, the target model (or None), what was folded."""
    state: dict
    net: object
    blocks: list
    own: list         # the model's own blocks folded into their deploy conv
    bns: list
    own_label: str = "block"   # what those are called (their native kind's label)


def same_file(a, b):
    if os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)



def check_replaceable(path, what, overwrite):
    """UserError unless ``path`` is free to write: absent, or (with ``overwrite``) an existing file."""
    if os.path.isdir(path):
        raise UserError(f"{path}: {what} is a folder; give a file name")
    if os.path.lexists(path) and not overwrite:
        raise UserError(f"{path}: {what} already exists; pass --overwrite to replace it")


def check_against(state, shapes, model, path):
    """UserError naming the first parameter of ``state`` that does not fit ``shapes``."""
    problem = mismatch(state, shapes)
    if problem:
        raise UserError(f"{path}: not a checkpoint of {model}: {problem}")


# ---------------------------------------------------------------- stage 1: where the results go

def plan_outputs(src, dst, opts):
    """The :class:`Outputs` of a conversion, every option and path checked before anything is read."""
    fmt = export_format(opts.export) if opts.export is not None else None
    if opts.input_shape is not None and fmt is None:
        raise UserError("--input_shape needs --export")
    shape = parse_input_shape(opts.input_shape) if opts.input_shape is not None else None
    check_int8(fmt, opts.int8, opts.calib_data, opts.calib_samples, opts.calib_method)
    if os.path.exists(src) and same_file(src, dst):
        raise UserError(f"{dst}: --output is the input checkpoint; choose another file")
    folder = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(folder):
        raise UserError(f"{dst}: output folder {folder} does not exist")
    graph = graph_path(dst, fmt) if fmt else None
    if graph and (os.path.realpath(graph) == os.path.realpath(dst) or os.path.exists(src) and same_file(src, graph)):
        raise UserError(f"{graph}: the exported graph would overwrite --output or the input; "
                        f"give --output another name")
    check_replaceable(dst, "--output", opts.overwrite)
    if graph:
        check_replaceable(graph, "the exported graph (next to --output)", opts.overwrite)
    quantized = None
    if opts.int8:
        from .quantize import int8_path

        quantized = int8_path(graph)
        check_replaceable(quantized, "the INT8 graph (next to --output)", opts.overwrite)
    return Outputs(dst, fmt, shape, graph, quantized)


# ---------------------------------------------------------------- stages 2-3: read, identify

def read(src):
    """``(state, meta)``: the checkpoint's arrays and its record (:func:`acnet_ms.io.checkpoint.read_checkpoint`)."""
    return read_checkpoint(src)


def identify(src, state, meta, opts, log=print, imported=False):
    """The :class:`Source`: model, class count, block kind and options, the blocks the checkpoint holds
    (``imported``: a PyTorch file's, plain with nothing left to fold unless ``fold_bn``)."""
    model = resolve_model(meta, opts.model or opts.fallback.get("model"), src)
    if meta.get("deploy"):
        raise UserError(f"{src}: already fully folded (convs with bias, no BatchNorm): nothing to convert")
    check_recorded_kind(meta.get("block_type"), src)
    blocks = state_map.block_prefixes(state)
    own = state_map.find_blocks(state, native=True)  # the model's own blocks: they fold into its deploy form
    if not blocks and not own and not opts.fold_bn and not imported:
        raise UserError(f"{src}: no re-parameterizable block in this checkpoint: it is already plain "
                        f"(nothing to convert)")
    num_classes = classes_of(model, state, meta, opts.num_classes, opts.fallback, src)
    if num_classes is None:
        raise UserError(f"{src}: no classifier entry of {model} found to read the class count from; "
                        f"pass --num_classes N")
    calibration = None
    if opts.int8:
        from .quantize import check_calibration

        recipe = dict(calibration_recipe(meta), any_class_names=opts.any_class_names)
        calibration = (recipe, check_calibration(recipe, opts.calib_data, num_classes, meta.get("class_names")))
    block_type, block_options = opts.block_type, opts.block_options
    if not (meta.get("block_type") or block_type or block_options):
        block_type, block_options = opts.fallback.get("block_type"), opts.fallback.get("block_options")
    kind, options = block_of(state, meta, block_type, block_options, src, log) if blocks else (kinds.BASE, {})
    return Source(src, state, meta, model, num_classes, kind, options, blocks, own,
                  fully=opts.fold_bn or not (blocks or imported), calibration=calibration, imported=imported)


# ---------------------------------------------------------------- stage 4: fold, checked against the stock model

def training_layout(source):
    """Where each block of the checkpoint folds (the model's layout for its kind and options); UserError
    naming a block of the model the checkpoint lacks."""
    if not source.blocks:
        return {}
    layout = layout_for(source.model, source.num_classes,
                        dict(source.meta, block_type=source.kind, block_options=source.options))
    absent = [p for p in layout if p not in source.blocks]
    if absent:
        label = kinds.get_kind(layout[absent[0]].kind).label
        raise UserError(f"{source.path}: not a checkpoint of {source.model}: its {label} '{absent[0]}' is missing "
                        f"({len(absent)} of {len(layout)})")
    return layout


def fold_to_stock(source, native):
    """``(arrays, folded block names)``: the checkpoint's blocks folded into the stock model's entries, in its
    order; checked against its names and shapes (and the model's own blocks, ``native``, complete)."""
    shapes = shapes_of(uninitialised_model(source.model, source.num_classes))
    try:
        forms = Forms(training_layout(source))
        # the network's entries are the model's names in training form; all else is optimizer/trainer state
        moved = forms.move(source.state, STOCK, network=state_map.training_names(shapes, forms.blocks))
        state_map.check_blocks(moved.state, native)
    except ValueError as err:
        raise UserError(f"{source.path}: {err}") from None
    check_against(moved.state, shapes, source.model, source.path)
    return {k: moved.state[k] for k in shapes}, moved.blocks


def fold_to_deploy(source, plain, net):
    """``(arrays, own blocks folded, BN pairs folded)``: the stock arrays ``plain`` folded on into the fully
    folded model ``net`` (its own blocks, then every conv + BN), in its order, checked against it."""
    try:
        moved = Forms(native=net.acnet.native_blocks, pairs=net.acnet.fused_pairs).move(plain, DEPLOY)
    except ValueError as err:
        raise UserError(f"{source.path}: {err}") from None
    check_against(moved.state, shapes_of(net), source.model + " (deploy)", source.path)
    return {p.name: moved.state[p.name] for p in net.get_parameters()}, moved.own, moved.bns


def fold(source, opts, outputs):
    """The :class:`Folded` result of ``source``: the stock model's checkpoint, or the fully folded one."""
    net, native = None, {}
    shape = recorded_model_kwargs(source.meta)  # the folded model and a graph compute what was trained
    if source.fully:
        net = uninitialised_model(source.model, source.num_classes, deploy=True, **shape)
        native = net.acnet.native_blocks
        if not native and not opts.fold_bn:
            raise UserError(f"{source.path}: no re-parameterizable block of {source.model} in this checkpoint: it "
                            f"is already plain (nothing to convert)")
    plain, blocks = fold_to_stock(source, native)
    own, bns = [], []
    if source.fully:
        plain, own, bns = fold_to_deploy(source, plain, net)
    elif outputs.fmt:
        net = uninitialised_model(source.model, source.num_classes, **shape)
    return Folded(plain, net, blocks, own, bns, _label([block.kind for block in native.values()]))


# ---------------------------------------------------------------- stage 5: export

@dataclass
class Graphs:
    """The exported graphs, still at their temporary paths, and what the log says of them."""
    graph: Optional[str] = None
    int8: Optional[str] = None
    origin: Optional[str] = None     # where the input shape comes from
    calibrated: int = 0              # calibration images of the INT8 graph

    def discard(self):
        for tmp in (self.graph, self.int8):
            if tmp and os.path.exists(tmp):
                os.remove(tmp)


def export(source, folded, outputs, opts):
    """The :class:`Graphs` asked for (none without ``--export``), at temporary paths; ``outputs.shape``
    becomes the graph's input shape.  The caller renames them into place or discards them."""
    graphs = Graphs()
    if not outputs.fmt:
        return graphs
    import mindspore as ms

    outputs.shape, graphs.origin = graph_shape(folded.net, source.model, source.meta, outputs.shape)
    recipe = fit_calibration(source.calibration[0], source.meta, outputs.shape) if opts.int8 else None
    for param in folded.net.get_parameters():
        param.set_data(ms.Tensor(folded.state[param.name]))
    folded.net.set_train(False)
    graphs.graph = export_graph(folded.net, outputs.shape, outputs.graph, outputs.fmt)
    try:
        if opts.int8:
            quantize(graphs, recipe, source, outputs, opts)
    except BaseException:
        graphs.discard()
        raise
    return graphs


def quantize(graphs, recipe, source, outputs, opts):
    """``graphs.int8``: the INT8 graph of ``graphs.graph``, calibrated on images read as validate.py reads them."""
    from .quantize import DEFAULT_CALIB_SAMPLES, calibration_batches, quantize_graph

    samples = opts.calib_samples or DEFAULT_CALIB_SAMPLES
    batches = calibration_batches(recipe, opts.calib_data, source.calibration[1], samples, batch=outputs.shape[0],
                                  log=lambda *_: None)
    graphs.calibrated = sum(len(b) for b in batches)
    graphs.int8 = quantize_graph(graphs.graph, outputs.int8, batches, opts.calib_method or "minmax")


# ---------------------------------------------------------------- stages 6-7: write, report

def out_meta(source):
    """The converted checkpoint's record: the source's, now of the plain (or fully folded) model."""
    meta = {k: v for k, v in source.meta.items() if k not in ("block_type", "deploy")}
    meta.update(model=source.model, block_type=kinds.BASE, block_options={}, num_classes=source.num_classes,
                folded_from=os.path.basename(source.path))
    if source.fully:
        meta["deploy"] = True
    return meta


def write(source, folded, graphs, outputs):
    """The checkpoint written (atomically), then the graphs renamed next to it; nothing left half-written."""
    try:
        write_checkpoint(outputs.checkpoint, folded.state, out_meta(source))
        if graphs.graph:
            os.replace(graphs.graph, outputs.graph)
        if graphs.int8:
            os.replace(graphs.int8, outputs.int8)
    except OSError as err:
        raise UserError(f"{outputs.graph}: cannot write ({err.strerror})") from None
    finally:
        graphs.discard()


def report(source, folded, graphs, outputs, opts, seconds, log=print):
    """The summary dict, and its lines through ``log``."""
    summary = dict(model=source.model, acbs=len(folded.blocks), blocks=len(folded.blocks), bns=len(folded.bns),
                   params_in=len(source.state), params_out=len(folded.state), seconds=seconds, graph=outputs.graph,
                   input_shape=outputs.shape if outputs.fmt else None, int8_graph=outputs.int8,
                   native_blocks=len(folded.own))
    label = _label([source.kind] if source.kind != kinds.BASE else [])
    steps = [f"{len(folded.blocks)} {label}s"] if source.blocks or not (folded.own or source.imported) else []
    steps += [f"{len(folded.own)} {folded.own_label}s (the model's own) into one conv each"] if folded.own else []
    steps += [f"{len(folded.bns)} BatchNorms into their convs"] if opts.fold_bn else []
    done = f"folded {', then '.join(steps)}; " if steps else ""
    log(f"{source.model}: {done}{summary['params_in']} parameters in, {summary['params_out']} out; wrote "
        f"{outputs.checkpoint} in {seconds:.2f} s")
    if recorded_model_kwargs(source.meta).get("maxpool_pad") == "symmetric":
        log(f"{source.model}: trained with maxpool_pad symmetric; stock MindCV pads its max-pool bottom and right "
            f"(a shifted function): validate with --maxpool_pad symmetric, or build it with that option")
    if source.own and not source.fully:
        log(f"{source.model}: its own {_label(source.own.values())}s stay in training form, as in the stock "
            f"model; --fold_bn folds each into one conv (the deploy form)")
    if outputs.fmt:
        log(f"exported {EXPORT_FORMATS[outputs.fmt][0]} graph {outputs.graph}: input shape {list(outputs.shape)} "
            f"(float32, NCHW; {graphs.origin})")
    if opts.int8:
        log(f"quantized INT8 graph {outputs.int8}: onnxruntime static quantization (QDQ, per-channel INT8 "
            f"weights), {graphs.calibrated} calibration images of {opts.calib_data} ({opts.calib_method or 'minmax'})")
    return summary


def _label(kind_names):
    """What blocks of these kinds are called: the first kind's label ("block" for none)."""
    names = list(kind_names)
    return kinds.get_kind(names[0]).label if names else "block"


# ---------------------------------------------------------------- the pipeline

def convert_checkpoint(src, dst, options=None, log=print, **given):
    """Fold every re-parameterizable block of checkpoint ``src`` and write a plain-model checkpoint to ``dst``.

    ``options``: a :class:`ConvertOptions`; its fields may also be given as
    keywords (over ``options``).  ``model``, ``num_classes``, ``block_type``,
    ``block_options``: for a checkpoint that does not record them (given ones
    must agree with what it records; see :func:`block_of`,
    :func:`classes_of`); ``fallback``: the same keys from a config file, used
    only where the checkpoint records nothing and nothing is given.

    ``fold_bn``: fold every BatchNorm too, into a checkpoint of the fully
    folded model (``create_model(name, deploy=True)``; its meta says
    ``deploy: true``).  A plain checkpoint (no block) is then fine as input.
    ``export`` (``"mindir"`` or ``"onnx"``): also write the converted model as
    a graph next to ``dst`` (same stem), for an input of ``input_shape``
    (``"N,C,H,W"``; default batch 1 at the size the checkpoint was trained at,
    its config's ``image_resize``, else the model's input size).
    ``int8`` (with ``export="onnx"``): also write ``<stem>.int8.onnx``, the
    graph quantized by onnxruntime (:mod:`acnet_ms.convert.quantize`), calibrated on
    ``calib_samples`` images of the folder ``calib_data`` through the
    transforms validate.py applies to this checkpoint (``calib_method``:
    minmax, entropy or percentile).
    ``overwrite``: replace ``dst`` (and the graph) if they exist; without it an
    existing file is a UserError and is left as it is.

    Returns a summary dict (model, acbs, bns, params_in, params_out, seconds,
    graph, input_shape).  Nothing is written unless the whole result has been
    checked against the model's parameter names and shapes (and exported).
    """
    start = time.perf_counter()
    opts = ConvertOptions.of(options, **given)
    if is_pth(src):
        return _convert_imported(src, dst, opts, log, start)
    outputs = plan_outputs(src, dst, opts)
    state, meta = read(src)
    source = identify(src, state, meta, opts, log)
    folded = fold(source, opts, outputs)
    graphs = export(source, folded, outputs, opts)
    write(source, folded, graphs, outputs)
    return report(source, folded, graphs, outputs, opts, time.perf_counter() - start, log)


def convert_pth(src, dst, model=None, source=None, block_type=None, num_classes=None, overwrite=False, log=print):
    """Convert the ``.pth`` ``src`` into a MindCV checkpoint of ``model`` at ``dst``; returns the summary dict
    (:func:`convert_checkpoint` on a ``.pth``, which also folds and exports one)."""
    return convert_checkpoint(src, dst, model=model, source=source, block_type=block_type, num_classes=num_classes,
                              overwrite=overwrite, log=log)


def _convert_imported(src, dst, opts, log, start):
    """:func:`convert_checkpoint` of a PyTorch file: read by its importer (:func:`acnet_ms.convert.foreign.pipeline.
    import_pth`) as the MindCV model's checkpoint, then written as it is or, with ``fold_bn`` or ``export``,
    through the stages above like any stock checkpoint."""
    from .foreign.pipeline import import_pth, _imported_line

    if opts.block_type and (opts.fold_bn or opts.export):
        raise UserError(f"--block_type with {'--fold_bn' if opts.fold_bn else '--export'}: a .pth imported into "
                        f"a kind's blocks is a training form to finetune; drop --block_type to fold or export it")
    outputs = plan_outputs(src, dst, opts)
    state, meta, info = import_pth(src, opts.model, opts.source, opts.block_type, opts.num_classes, log)
    summary = dict(info, model=meta["model"], num_classes=meta["num_classes"], block_type=meta["block_type"])
    if not (opts.fold_bn or outputs.fmt):
        write_checkpoint(dst, state, meta)
        log(_imported_line(src, dst, info, meta, len(state)))
        return dict(summary, params_out=len(state))
    from .foreign import describe

    log(f"{src}: {describe(info)}")
    plain = ConvertOptions.of(opts, model=meta["model"], num_classes=meta["num_classes"], block_type=None)
    source = identify(src, state, meta, plain, log, imported=True)
    folded = fold(source, plain, outputs)
    graphs = export(source, folded, outputs, plain)
    write(source, folded, graphs, outputs)
    return dict(summary, **report(source, folded, graphs, outputs, plain, time.perf_counter() - start, log))


# the names this module had before the package was laid out by role (acnet_ms/_moved.py)
__getattr__ = _moved_attr(__name__)
