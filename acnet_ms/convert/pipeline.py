"""Checkpoint conversion: a training-form checkpoint (re-parameterizable blocks) becomes a plain-model one.

With ``fold_bn`` every BatchNorm is folded too, into a checkpoint of the fully
folded model (``create_model(name, deploy=True)``); with ``export`` that model
is also written as a MINDIR or ONNX graph.  File I/O and model identification
live here; the name mapping is :func:`acnet_ms.reparam.state.fold_state` and
:func:`acnet_ms.reparam.state.fold_bns`, the arithmetic :mod:`acnet_ms.kinds.identities`.  Which
entries fold into which comes from the model itself (``acnet_ms.reparam.transform``),
so every registered model, MindCV's included, converts to the stock model's
checkpoint: the same names, shapes and order.
"""
import os
import time

from .. import kinds
from ..kinds.repvgg import state as repvgg_state
from ..reparam import state as state_map
from ..io.checkpoint import mismatch, read_checkpoint, shapes_of, write_checkpoint
from ..cli import UserError, first_line
from ..models import list_models, model_entry
from ..models.factory import create_model, layout_for, num_classes_of, recorded_block, uninitialised_model


#: graph formats of ``--export``: name -> (MindSpore's file_format, file suffix)
EXPORT_FORMATS = {"mindir": ("MINDIR", ".mindir"), "onnx": ("ONNX", ".onnx")}


def expected_shapes(model, num_classes):
    """Parameter name -> shape of the plain (``base``) form of ``model``, in the model's order."""
    return shapes_of(uninitialised_model(model, num_classes))


def fused_model(model, num_classes):
    """The fully folded model (initialised: its structure is traced) and its ``(conv, bn, eps)`` pairs."""
    net = create_model(model, num_classes=num_classes, deploy=True)
    return net, net.acnet.fused_pairs


def export_format(name):
    """The ``--export`` format, lower case; UserError for an unknown one."""
    fmt = str(name).lower()
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"--export must be one of {', '.join(EXPORT_FORMATS)}, got {name!r}")
    return fmt


def parse_input_shape(text):
    """``"1,3,224,224"`` -> ``(1, 3, 224, 224)``; UserError unless four positive integers."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"--input_shape must be four positive integers N,C,H,W (e.g. 1,3,224,224), got {text!r}")
    return tuple(int(p) for p in parts)


def graph_path(dst, fmt):
    """Where ``--export`` writes: next to ``dst``, same stem (``deploy.ckpt`` -> ``deploy.onnx``)."""
    return os.path.splitext(dst)[0] + EXPORT_FORMATS[fmt][1]


def export_graph(net, shape, path, fmt):
    """Export ``net`` for a float32 input of ``shape`` to ``path``, atomically; returns a temporary path
    to rename (the caller renames it once the checkpoint is written, or removes it)."""
    import mindspore as ms
    import numpy as np

    file_format, suffix = EXPORT_FORMATS[fmt]
    folder = os.path.dirname(os.path.abspath(path))
    # MindSpore appends the suffix to names that lack it, so the temporary name keeps it
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp{suffix}")
    mode = os.stat(folder).st_mode & 0o7777  # MindSpore's export makes the folder 0700: it is put back
    try:
        ms.export(net, ms.Tensor(np.zeros(shape, np.float32)), file_name=tmp, file_format=file_format)
        if not os.path.isfile(tmp):
            raise RuntimeError("no file written")
    except (OSError, RuntimeError, TypeError, ValueError) as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise UserError(f"{path}: {file_format} export failed ({first_line(err)})") from None
    finally:
        if os.stat(folder).st_mode & 0o7777 != mode:
            os.chmod(folder, mode)
    return tmp


def check_against(state, shapes, model, path):
    """UserError naming the first parameter of ``state`` that does not fit ``shapes``."""
    problem = mismatch(state, shapes)
    if problem:
        raise UserError(f"{path}: not a checkpoint of {model}: {problem}")


def _check_agreement(kind, given, known, source, path):
    """UserError if an option ``given`` differs, once checked, from what the checkpoint tells (``known``)."""
    checked = kind.check_options(given)
    differ = [k for k in (given or {}) if k in known and checked[k] != known[k]]
    if differ:
        raise UserError(f"{path}: block option '{differ[0]}' is {checked[differ[0]]!r} in the options given, "
                        f"but {source} {known[differ[0]]!r}")


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
            recorded, options = recorded_block(meta)
            if block_type and block_type != recorded:
                raise UserError(f"{path}: --block_type {block_type}, but the checkpoint records {recorded}")
            _check_agreement(kinds.get_kind(recorded), block_options, options, "the checkpoint records", path)
            return recorded, options
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
    except ValueError as err:
        raise UserError(f"{path}: {err}") from None


def classes_of(model, state, meta, num_classes=None, fallback=None, path=""):
    """The class count: the one recorded (``num_classes`` given must agree), else the one given, else
    ``fallback``'s (a config's), else the one the model's classifier entries in ``state`` show (dense or
    conv classifier alike); None if none of those tells."""
    recorded = meta.get("num_classes")
    if recorded and num_classes and recorded != num_classes:
        raise UserError(f"{path}: --num_classes {num_classes}, but the checkpoint records {recorded} classes")
    return (recorded or num_classes or (fallback or {}).get("num_classes")
            or num_classes_of(model, state_map.network_entries(state)))


def resolve_model(meta, model, path):
    """The model name: the one given, else the one recorded in the checkpoint."""
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


def check_replaceable(path, what, overwrite):
    """UserError unless ``path`` is free to write: absent, or (with ``overwrite``) an existing file."""
    if os.path.isdir(path):
        raise UserError(f"{path}: {what} is a folder; give a file name")
    if os.path.lexists(path) and not overwrite:
        raise UserError(f"{path}: {what} already exists; pass --overwrite to replace it")


def trained_size(meta):
    """The input size a training checkpoint records (its config's ``image_resize``), or None."""
    config = meta.get("config")
    size = config.get("image_resize") if isinstance(config, dict) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def check_int8(fmt, int8, calib_data, calib_samples, calib_method):
    """UserError for INT8 options that do not go together (before anything is read)."""
    from .quantize import check_method, check_samples

    if not int8:
        given = [n for n, v in (("calib_data", calib_data), ("calib_samples", calib_samples),
                                ("calib_method", calib_method)) if v is not None]
        if given:
            raise UserError(f"--{given[0]} needs --int8")
        return
    if fmt != "onnx":
        raise UserError("--int8 needs --export onnx (the INT8 graph is quantized from the exported ONNX graph)")
    if not calib_data:
        raise UserError("--int8 needs --calib_data DIR (a folder of calibration images, DIR/<class>/<image>)")
    if calib_samples is not None:
        check_samples(calib_samples)
    if calib_method is not None:
        check_method(calib_method)


def calibration_recipe(meta):
    """validate.py's options for this checkpoint: its recorded recipe over the defaults."""
    from ..config import loader as config
    from ..engine.evaluation import recorded_options

    cfg, _ = config.parse([], "calibration", base=recorded_options(meta))
    return cfg


def fit_calibration(cfg, meta, shape):
    """The calibration recipe at the graph's input size: the recorded ``image_resize`` must be it."""
    size = trained_size(meta)
    if size and (shape[2], shape[3]) != (size, size):
        raise UserError(f"--input_shape {','.join(map(str, shape))}: the checkpoint is validated at "
                        f"{size}x{size} (its image_resize); calibration images would not fit the graph")
    if not size:
        if shape[2] != shape[3]:
            raise UserError(f"--input_shape {','.join(map(str, shape))}: calibration needs square images "
                            f"(the validation transforms make them)")
        cfg = dict(cfg, image_resize=shape[2])
    return cfg


def convert_checkpoint(src, dst, model=None, fold_bn=False, export=None, input_shape=None, overwrite=False,
                       log=print, num_classes=None, block_type=None, block_options=None, fallback=None,
                       int8=False, calib_data=None, calib_samples=None, calib_method=None, any_class_names=False):
    """Fold every re-parameterizable block of checkpoint ``src`` and write a plain-model checkpoint to ``dst``.

    ``model``, ``num_classes``, ``block_type``, ``block_options``: for a
    checkpoint that does not record them (given ones must agree with what it
    records; see :func:`block_of`, :func:`classes_of`); ``fallback``: the same
    keys from a config file, used only where the checkpoint records nothing
    and nothing is given.

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
    fmt = export_format(export) if export is not None else None
    if input_shape is not None and fmt is None:
        raise UserError("--input_shape needs --export")
    shape = parse_input_shape(input_shape) if input_shape is not None else None
    check_int8(fmt, int8, calib_data, calib_samples, calib_method)
    if os.path.exists(src) and same_file(src, dst):
        raise UserError(f"{dst}: --output is the input checkpoint; choose another file")
    folder = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(folder):
        raise UserError(f"{dst}: output folder {folder} does not exist")
    graph = graph_path(dst, fmt) if fmt else None
    if graph and (os.path.realpath(graph) == os.path.realpath(dst)
                  or os.path.exists(src) and same_file(src, graph)):
        raise UserError(f"{graph}: the exported graph would overwrite --output or the input; "
                        f"give --output another name")
    check_replaceable(dst, "--output", overwrite)
    if graph:
        check_replaceable(graph, "the exported graph (next to --output)", overwrite)
    quantized = None
    if int8:
        from .quantize import int8_path

        quantized = int8_path(graph)
        check_replaceable(quantized, "the INT8 graph (next to --output)", overwrite)
    state, meta = read_checkpoint(src)
    fallback = fallback or {}
    name = resolve_model(meta, model or fallback.get("model"), src)
    if meta.get("deploy"):
        raise UserError(f"{src}: already fully folded (convs with bias, no BatchNorm): nothing to convert")
    found = state_map.block_prefixes(state)
    own = repvgg_state.find(state)  # the model's own blocks (MindCV's RepVGG): they fold into its deploy form
    if not found and not own and not fold_bn:
        raise UserError(f"{src}: no re-parameterizable block in this checkpoint: it is already plain "
                        f"(nothing to convert)")
    num_classes = classes_of(name, state, meta, num_classes, fallback, src)
    if num_classes is None:
        raise UserError(f"{src}: no classifier entry of {name} found to read the class count from; "
                        f"pass --num_classes N")
    if int8:
        from .quantize import check_calibration

        calib_cfg = dict(calibration_recipe(meta), any_class_names=any_class_names)
        calib_spec = check_calibration(calib_cfg, calib_data, num_classes, meta.get("class_names"))
    shapes = expected_shapes(name, num_classes)
    if not (meta.get("block_type") or block_type or block_options):
        block_type, block_options = fallback.get("block_type"), fallback.get("block_options")
    kind, options = block_of(state, meta, block_type, block_options, src, log) if found else (kinds.BASE, {})
    # the fully folded form: asked for, or the only conversion a checkpoint of a model's own blocks has
    fully = fold_bn or not found
    net, pairs, native = None, [], {}
    if fully:
        net, pairs = fused_model(name, num_classes)
        native = net.acnet.native_blocks
        if not native and not fold_bn:
            raise UserError(f"{src}: no re-parameterizable block of {name} in this checkpoint: it is already "
                            f"plain (nothing to convert)")
    try:
        layout = layout_for(name, num_classes, dict(meta, block_type=kind, block_options=options)) \
            if found else {}
        absent = [p for p in layout if p not in found]
        if absent:
            label = kinds.get_kind(layout[absent[0]]["kind"]).label
            raise UserError(f"{src}: not a checkpoint of {name}: its {label} '{absent[0]}' is missing "
                            f"({len(absent)} of {len(layout)})")
        # the network's entries are the model's names in training form; all else is optimizer/trainer state
        plain, acbs = state_map.fold_state(state, layout, network=state_map.training_names(shapes, layout))
        repvgg_state.check_blocks(plain, native)
    except ValueError as err:
        raise UserError(f"{src}: {err}") from None
    check_against(plain, shapes, name, src)
    plain = {k: plain[k] for k in shapes}  # the stock model's order
    bns, own_folded = [], []
    if fully:
        try:
            plain, own_folded = repvgg_state.fold_blocks(plain, native)
            plain, bns = state_map.fold_bns(plain, pairs)
        except ValueError as err:
            raise UserError(f"{src}: {err}") from None
        check_against(plain, shapes_of(net), name + " (deploy)", src)
        plain = {p.name: plain[p.name] for p in net.get_parameters()}
    elif fmt:
        net = uninitialised_model(name, num_classes)
    tmp_graph = None
    if fmt:
        import mindspore as ms

        channels = next(p.shape[1] for p in net.get_parameters() if len(p.shape) == 4)  # the stem's input
        if shape:
            origin = "from --input_shape"
        elif trained_size(meta):
            size, origin = trained_size(meta), "the checkpoint's training image_resize"
        else:
            size = model_entry(name).input_size
            origin = f"{name}'s input size: the checkpoint records no image_resize"
        shape = shape or (1, channels, size, size)
        if shape[1] != channels:
            raise UserError(f"--input_shape {','.join(map(str, shape))}: {name} takes {channels} input channels, "
                            f"not {shape[1]}")
        if int8:
            calib_cfg = fit_calibration(calib_cfg, meta, shape)
        for param in net.get_parameters():
            param.set_data(ms.Tensor(plain[param.name]))
        net.set_train(False)
        tmp_graph = export_graph(net, shape, graph, fmt)
    tmp_int8 = None
    if int8:
        from .quantize import DEFAULT_CALIB_SAMPLES, calibration_batches, quantize_graph

        samples, method = calib_samples or DEFAULT_CALIB_SAMPLES, calib_method or "minmax"
        try:
            batches = calibration_batches(calib_cfg, calib_data, calib_spec, samples, batch=shape[0],
                                          log=lambda *_: None)
            tmp_int8 = quantize_graph(tmp_graph, quantized, batches, method)
        except BaseException:
            os.remove(tmp_graph)
            raise
    out_meta = {k: v for k, v in meta.items() if k not in ("block_type", "deploy")}
    out_meta.update(model=name, block_type=kinds.BASE, block_options={}, num_classes=num_classes,
                    folded_from=os.path.basename(src))
    if fully:
        out_meta["deploy"] = True
    try:
        write_checkpoint(dst, plain, out_meta)
        if tmp_graph:
            os.replace(tmp_graph, graph)
        if tmp_int8:
            os.replace(tmp_int8, quantized)
    except OSError as err:
        raise UserError(f"{graph}: cannot write ({err.strerror})") from None
    finally:
        for tmp in (tmp_graph, tmp_int8):
            if tmp and os.path.exists(tmp):
                os.remove(tmp)
    summary = dict(model=name, acbs=len(acbs), blocks=len(acbs), bns=len(bns), params_in=len(state),
                   params_out=len(plain), seconds=time.perf_counter() - start, graph=graph,
                   input_shape=shape if fmt else None, int8_graph=quantized, native_blocks=len(own_folded))
    label = kinds.get_kind(kind).label if kind != kinds.BASE else "block"
    steps = [f"{len(acbs)} {label}s"] if found or not own_folded else []
    steps += [f"{len(own_folded)} RepVGG blocks (the model's own) into one conv each"] if own_folded else []
    steps += [f"{len(bns)} BatchNorms into their convs"] if fold_bn else []
    log(f"{name}: folded {', then '.join(steps)}; {summary['params_in']} parameters in, "
        f"{summary['params_out']} out; wrote {dst} in {summary['seconds']:.2f} s")
    if own and not fully:
        log(f"{name}: its own RepVGG blocks stay three-branch, as in MindCV's model; --fold_bn folds each into "
            f"one conv (the deploy form)")
    if fmt:
        log(f"exported {EXPORT_FORMATS[fmt][0]} graph {graph}: input shape {list(shape)} (float32, NCHW; "
            f"{origin})")
    if int8:
        log(f"quantized INT8 graph {quantized}: onnxruntime static quantization (QDQ, per-channel INT8 weights), "
            f"{sum(len(b) for b in batches)} calibration images of {calib_data} ({method})")
    return summary
