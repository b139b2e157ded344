"""INT8 deployment through onnxruntime: quantize an exported graph, score any graph on a validation split.

Three pieces, each built on what the rest of the package already does:

``quantize_graph``  onnxruntime's static post-training quantization
    (``quantize_static``, QDQ format, per-channel symmetric INT8 weights,
    UINT8 activations) of an FP32 ONNX graph, calibrated on batches of images.
``calibration_batches``  those batches: N images of a folder, evenly spread over
    it, through the validation transforms and loader of :mod:`acnet_ms.engine.data`
    (the pipeline ``validate.py`` runs, with the checkpoint's recorded recipe).
``score_graph``  top-1 / top-5 / loss / samples of an ONNX classifier on the
    validation split, through :func:`acnet_ms.engine.evaluation.evaluate` with the graph
    in place of the network, so the numbers are computed as ``validate.py``'s.

The ``onnx`` and ``onnxruntime`` packages (``requirements-onnx.txt``) are
imported only here, only when called: training, conversion without
``--int8`` and ``import acnet_ms`` do not need them.

Weight statistics of the ``quantization`` analysis (:func:`int8_roundtrip`,
:func:`weight_sqnr`, :func:`range_ratios`) are pure numpy.
"""
import logging
import math
import os
import tempfile

import numpy as np

from ..cli import UserError, first_line

CALIB_METHODS = ("minmax", "entropy", "percentile")
DEFAULT_CALIB_SAMPLES = 256

#: per-channel QuantizeLinear / DequantizeLinear (their ``axis``) need this ONNX opset at least
QDQ_OPSET = 13

#: the symmetric INT8 grid of the weights: [-127, 127] (onnxruntime's, for symmetric signed 8 bits)
QMAX = 127


# ---------------------------------------------------------------- weights, pure numpy

def int8_roundtrip(weight):
    """``weight`` quantized per output channel (axis 0) to symmetric INT8 and back, float64.

    Channel c has the scale ``s_c = max |w_c| / 127``; each entry becomes
    ``clip(round(w / s_c), -127, 127) * s_c`` (round half to even).  An
    all-zero channel stays zero.
    """
    w = np.asarray(weight, np.float64)
    flat = w.reshape(w.shape[0], -1)
    scale = np.abs(flat).max(axis=1, keepdims=True) / QMAX
    safe = np.where(scale > 0, scale, 1.0)
    return (np.clip(np.round(flat / safe), -QMAX, QMAX) * safe).reshape(w.shape)


def weight_sqnr(weight):
    """Signal-to-quantization-noise ratio of the per-channel INT8 weight, in dB, over the whole tensor.

    ``10 log10(sum w^2 / sum (w - q(w))^2)`` with ``q`` :func:`int8_roundtrip`;
    ``inf`` when the round trip is exact, None for an all-zero tensor.
    """
    w = np.asarray(weight, np.float64)
    signal = float(np.sum(w * w))
    if signal == 0:
        return None
    noise = float(np.sum((w - int8_roundtrip(w)) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


def range_ratios(weight):
    """Per output channel ``max |w_c| / std(w_c)`` (population std); channels with std 0 are left out.

    A large ratio means a few large weights set the channel's INT8 scale while
    most of its weights fall on a few grid steps.
    """
    flat = np.asarray(weight, np.float64).reshape(np.shape(weight)[0], -1)
    std = flat.std(axis=1)
    keep = std > 0
    return np.abs(flat[keep]).max(axis=1) / std[keep]


# ---------------------------------------------------------------- the runtime

def runtime():
    """``(onnx, onnxruntime)``, or a one-line UserError saying how to install them.

    MindSpore is imported first: it selects protobuf's Python implementation,
    which its own generated modules need; ``onnx`` imported first would fix
    the compiled one, and MindSpore would then fail to import.
    """
    import mindspore  # noqa: F401

    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise UserError(f"ONNX scoring and INT8 quantization need the onnx and onnxruntime packages "
                        f"({err.name} is not installed): pip install -r requirements-onnx.txt") from None
    return onnx, onnxruntime


class Graph:
    """An ONNX image classifier in onnxruntime: one float NCHW input, one (batch, classes) output.

    ``batch`` is the graph's fixed batch size, or None where it is dynamic;
    :meth:`run` takes any number of images (chunks of ``batch``, the last one
    padded with zeros and cut off again).  A file that is no such graph is a
    UserError naming it.
    """

    def __init__(self, path):
        _, ort = runtime()
        if not os.path.isfile(path):
            raise UserError(f"{path}: no such file")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001  (onnxruntime raises its own classes for every kind of bad file)
            raise UserError(f"{path}: not an ONNX graph onnxruntime can load ({first_line(err)})") from None
        self.path = path
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or inputs[0].type != "tensor(float)" or len(inputs[0].shape) != 4 \
                or not all(isinstance(d, int) for d in inputs[0].shape[1:]):
            found = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
            raise UserError(f"{path}: not an image classifier: expected one float NCHW input, found {found}")
        if len(outputs) != 1 or len(outputs[0].shape) != 2 or not isinstance(outputs[0].shape[1], int):
            found = ", ".join(f"{o.name} {o.shape}" for o in outputs)
            raise UserError(f"{path}: not a classifier: expected one (batch, classes) output, found {found}")
        self.input = inputs[0].name
        batch, self.channels, self.height, self.width = inputs[0].shape
        self.batch = batch if isinstance(batch, int) else None
        self.classes = outputs[0].shape[1]

    def run(self, images):
        """Logits (numpy float32) of an NCHW float batch of any size (padded to the graph's batch if it has
        a fixed one)."""
        images = np.ascontiguousarray(images, np.float32)
        if self.batch is None:
            return self.logits(images)
        out = []
        for start in range(0, len(images), self.batch):
            chunk = images[start:start + self.batch]
            n = len(chunk)
            if n < self.batch:
                chunk = np.concatenate([chunk, np.zeros((self.batch - n,) + chunk.shape[1:], np.float32)])
            out.append(self.logits(chunk)[:n])
        return np.concatenate(out)

    def logits(self, images):
        """The graph's output for one batch it takes."""
        return self.session.run(None, {self.input: images})[0]

    def check_images(self, size, option="image_resize"):
        """UserError unless the transforms' ``size`` x ``size`` images are what the graph takes."""
        if self.channels != 3 or (self.height, self.width) != (size, size):
            raise UserError(f"{self.path}: the graph takes {self.channels}x{self.height}x{self.width} images, "
                            f"but {option} makes 3x{size}x{size} ones")


class MindIRGraph(Graph):
    """A MINDIR image classifier (``convert.py --export mindir``) run by MindSpore (``mindspore.load`` and
    ``nn.GraphCell``), with :class:`Graph`'s interface: its input and output shapes are read from the file."""

    def __init__(self, path):  # noqa: D107  (Graph's __init__ is onnxruntime's; not called)
        import mindspore as ms
        from mindspore import nn
        from mindspore.train import mind_ir_pb2

        if not os.path.isfile(path):
            raise UserError(f"{path}: no such file")
        model = mind_ir_pb2.ModelProto()
        try:
            with open(path, "rb") as f:
                model.ParseFromString(f.read())
            inputs = [list(t.dims) for i in model.graph.input for t in i.tensor]
            outputs = [list(t.dims) for o in model.graph.output for t in o.tensor]
            self.cell = nn.GraphCell(ms.load(path))
        except Exception as err:  # noqa: BLE001  (protobuf and MindSpore raise their own classes for bad files)
            raise UserError(f"{path}: not a MINDIR graph MindSpore can load ({first_line(err)})") from None
        if len(inputs) != 1 or len(inputs[0]) != 4 or any(d < 1 for d in inputs[0][1:]):
            raise UserError(f"{path}: not an image classifier: expected one NCHW input, found {inputs}")
        if len(outputs) != 1 or len(outputs[0]) != 2:
            raise UserError(f"{path}: not a classifier: expected one (batch, classes) output, found {outputs}")
        self.path = path
        batch, self.channels, self.height, self.width = inputs[0]
        self.batch = batch if batch > 0 else None
        self.classes = outputs[0][1]

    def logits(self, images):  # noqa: D102
        import mindspore as ms

        return self.cell(ms.Tensor(images)).asnumpy()


def open_graph(path):
    """The graph ``path`` names: an ONNX one (onnxruntime) or a MINDIR one (MindSpore), by its suffix."""
    return MindIRGraph(path) if path.lower().endswith(".mindir") else Graph(path)


class _Logits:
    def __init__(self, array):
        self.array = array

    def asnumpy(self):
        return self.array


class _GraphNet:
    """A :class:`Graph` where :func:`acnet_ms.engine.evaluation.evaluate` expects a network."""

    def __init__(self, graph):
        self.graph = graph

    def set_train(self, mode=True):
        return self

    def __call__(self, image):
        return _Logits(self.graph.run(image.asnumpy()))


# ---------------------------------------------------------------- scoring

def sibling_checkpoint(path):
    """The checkpoint ``convert.py`` wrote beside a graph: ``x.onnx`` / ``x.int8.onnx`` -> ``x.ckpt``."""
    stem = os.path.splitext(path)[0]
    if stem.endswith(".int8"):
        stem = stem[:-len(".int8")]
    return stem + ".ckpt"


def graph_options(path, log=print):
    """validate.py's defaults for scoring the graph ``path``.

    The data recipe the checkpoint beside it (same stem, written by
    ``convert.py``) records, if there is one; the class count and the input
    size (``image_resize``) from the graph where the recipe does not say.
    """
    from ..io.checkpoint import read_checkpoint
    from ..engine.evaluation import recorded_options

    graph = open_graph(path)
    base = {}
    ckpt = sibling_checkpoint(path)
    if os.path.isfile(ckpt):
        base = recorded_options(read_checkpoint(ckpt)[1])
        if base:
            log(f"{path}: data options recorded in {ckpt}")
    base.setdefault("num_classes", graph.classes)
    if not base.get("image_resize"):
        base["image_resize"] = graph.height
    return base


def score_graph(cfg, path, log=print):
    """validate.py's metrics dict for the ONNX or MINDIR classifier ``path`` on ``cfg``'s validation split."""
    from ..engine import data
    from ..engine.evaluation import evaluate

    graph = open_graph(path)
    spec = data.inspect(cfg, "val")
    if graph.classes != spec.num_classes:
        raise UserError(f"{path}: the graph classifies {graph.classes} classes, but the validation data "
                        f"{spec.root} has {spec.num_classes}")
    graph.check_images(cfg["image_resize"])
    loader = data.create_loader(cfg, spec, False, 0, 1, data.workers(cfg, log))
    return evaluate(_GraphNet(graph), loader, 1, progress=log, every=cfg["log_interval"])


# ---------------------------------------------------------------- calibration

def check_method(method):
    if method not in CALIB_METHODS:
        raise UserError(f"--calib_method must be one of {', '.join(CALIB_METHODS)}, got {method!r}")
    return method


def check_samples(samples):
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise UserError(f"--calib_samples must be a positive whole number, got {samples!r}")
    return samples


def calibration_config(cfg, folder):
    """``cfg`` (the recipe validate.py would use) with ``folder`` as its validation split."""
    folder = os.path.normpath(folder)
    return dict(cfg, data_dir=os.path.dirname(os.path.abspath(folder)), val_split=os.path.basename(folder),
                val_list=None, eval_shuffle=False)


def check_calibration(cfg, folder, num_classes, class_names=None):
    """Check the calibration folder before anything is written: a DataSpec of it, else a UserError.

    ``class_names``: those the checkpoint records (training's class folders), which the folder's must be."""
    from ..engine import data

    if not os.path.isdir(folder):
        raise UserError(f"--calib_data {folder}: no such folder")
    try:
        spec = data.inspect(calibration_config(cfg, folder), "val")
    except UserError as err:
        raise UserError(f"--calib_data: {err}") from None
    if spec.num_classes != num_classes:
        raise UserError(f"--calib_data {folder}: {spec.num_classes} class folders, but the model classifies "
                        f"{num_classes} classes")
    if not cfg.get("any_class_names"):
        data.check_class_names(spec, class_names, "the checkpoint", "--any_class_names")
    return spec


def calibration_batches(cfg, folder, spec, samples, batch=1, log=print):
    """``samples`` images of ``folder`` (evenly spread over its sorted classes and files) through the
    validation transforms of ``cfg``, as a list of NCHW float32 arrays of ``batch`` images each (a
    remainder short of ``batch`` is left out)."""
    from ..engine import data

    cfg = calibration_config(cfg, folder)
    count = min(samples, spec.num_samples)
    indices = np.unique(np.linspace(0, spec.num_samples - 1, count).round().astype(int)).tolist()
    loader = data.create_loader(cfg, spec, False, indices=indices, num_workers=data.workers(cfg, log))
    images = []
    try:
        for image, _ in loader.create_tuple_iterator(num_epochs=1):
            images.append(image.asnumpy().astype(np.float32))
    except RuntimeError as err:
        raise data.pipeline_error(err) or UserError(f"--calib_data {folder}: {first_line(err)}") from None
    images = np.concatenate(images)
    whole = len(images) // batch * batch
    if whole == 0:
        raise UserError(f"--calib_samples {samples}: fewer images than the graph's batch of {batch}")
    return [images[i:i + batch] for i in range(0, whole, batch)]


def temporary_path(path):
    """A temporary name beside ``path`` that keeps its suffix: ``.name.<pid>.tmp.onnx``."""
    return os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{os.getpid()}.tmp.onnx")


def quantize_graph(src, dst, batches, method="minmax"):
    """Quantize the FP32 graph ``src`` to INT8, calibrated on ``batches`` (NCHW float32 arrays).

    onnxruntime's ``quantize_static``: QDQ format, per-channel INT8 weights,
    UINT8 activations (asymmetric), ``method`` (minmax, entropy or
    percentile) choosing the activation ranges.  UINT8 activations with INT8
    weights (U8S8) are what onnxruntime's x86 kernels run fastest: on the
    benchmark CPU a folded ``sres18`` at batch 16 ran in 0.39x the FP32 time
    so, and in 1.00x with INT8 activations (S8S8).  The graph is first
    brought to ONNX opset 13 if it is older (MindSpore exports opset 11;
    per-channel QDQ needs 13) and through onnxruntime's ``quant_pre_process``
    (shape inference, graph optimisation), as onnxruntime's documentation asks.  Written to a temporary file beside
    ``dst``, whose path is returned for the caller to rename (or remove), once
    onnxruntime has loaded it as an image classifier.
    """
    onnx, _ = runtime()
    from onnx import version_converter
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)

    check_method(method)
    graph = Graph(src)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(batches)

        def get_next(self):
            batch = next(self.items, None)
            return None if batch is None else {graph.input: batch}

    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    tmp = temporary_path(dst)
    quiet = logging.getLogger()  # the quantizer warns through the root logger; errors come as exceptions
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as work:
            model = onnx.load(src)
            opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
            if opset < QDQ_OPSET:
                model = version_converter.convert_version(model, QDQ_OPSET)
            upgraded, prepared = os.path.join(work, "fp32.onnx"), os.path.join(work, "prepared.onnx")
            onnx.save(model, upgraded)
            quant_pre_process(upgraded, prepared, skip_symbolic_shape=True)  # static shapes: onnx's inference
            quantize_static(prepared, tmp, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=calibrate)
        Graph(tmp)
    except Exception as err:  # noqa: BLE001  (onnx's and onnxruntime's tools raise many kinds)
        if os.path.exists(tmp):
            os.remove(tmp)
        raise UserError(f"{dst}: INT8 quantization failed ({first_line(err)})") from None
    finally:
        quiet.setLevel(level)
    return tmp


def int8_path(graph):
    """Where the INT8 graph goes: beside the FP32 one, ``x.onnx`` -> ``x.int8.onnx``."""
    return os.path.splitext(graph)[0] + ".int8.onnx"
