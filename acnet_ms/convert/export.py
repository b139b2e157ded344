"""The converted model as a graph (``--export mindir|onnx``) and its INT8 twin's options (``--int8``)."""
import os

from ..cli import UserError, first_line

#: graph formats of ``--export``: name -> (MindSpore's file_format, file suffix)
EXPORT_FORMATS = {"mindir": ("MINDIR", ".mindir"), "onnx": ("ONNX", ".onnx")}


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


def trained_size(meta):
    """The input size a training checkpoint records (its config's ``image_resize``), or None."""
    config = meta.get("config")
    size = config.get("image_resize") if isinstance(config, dict) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def graph_shape(net, model, meta, shape=None):
    """``(shape, origin)``: the exported graph's input shape (``shape`` given, else batch 1 at the
    checkpoint's training ``image_resize``, else at the model's input size) and where it comes from;
    UserError when its channels are not the model's."""
    from ..models import model_entry

    channels = next(p.shape[1] for p in net.get_parameters() if len(p.shape) == 4)  # the stem's input
    if shape:
        origin = "from --input_shape"
    elif trained_size(meta):
        size, origin = trained_size(meta), "the checkpoint's training image_resize"
    else:
        size = model_entry(model).input_size
        origin = f"{model}'s input size: the checkpoint records no image_resize"
    shape = shape or (1, channels, size, size)
    if shape[1] != channels:
        raise UserError(f"--input_shape {','.join(map(str, shape))}: {model} takes {channels} input channels, "
                        f"not {shape[1]}")
    return shape, origin


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
