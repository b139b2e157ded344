"""``quantization``: INT8 weight error and range per folded layer; FP32 and INT8 top-1 in onnxruntime.

Per layer of the fully folded model (every conv and dense weight): the INT8
weight quantization error as SQNR in dB (per-channel symmetric,
:func:`acnet_ms.convert.quantize.weight_sqnr`) and the range statistic max |w| / std
per output channel; end to end, the top-1 of the fully folded model exported
to ONNX (FP32) and quantized by onnxruntime (INT8), both scored in
onnxruntime (:mod:`acnet_ms.convert.quantize`, as ``convert.py --int8`` and
``validate.py`` on the graphs).
"""
import os

import numpy as np

from ..reparam import state as state_map
from ..cli import UserError
from .common import _fold_bns, _model_of, _pyplot, check_data, check_kernels

QUANTIZATION_DEFINITION = (
    "per conv / dense weight of the fully folded model: SQNR = 10 log10(sum w^2 / sum (w - q(w))^2) dB with q the "
    "per-output-channel symmetric INT8 round trip (scale max|w_c| / 127); range = max|w_c| / std(w_c) per output "
    "channel (mean and max over channels); top-1 of the FP32 ONNX graph and of onnxruntime's static INT8 "
    "quantization of it (QDQ, per-channel weights), both in onnxruntime")


def folded_state(subject):
    """The fully folded checkpoint of ``subject`` (every ACB and every BN after a conv folded)."""
    state, _ = subject.plain_state()
    if subject.meta.get("deploy"):
        return state
    try:
        return _fold_bns(subject, state)
    except ValueError as err:
        raise UserError(f"{subject.path}: {err}") from None


def weight_layers(state):
    """Per-layer INT8 statistics of every conv (4-d) and dense (2-d) ``*.weight`` of a checkpoint dict."""
    from ..convert.quantize import range_ratios, weight_sqnr

    rows = []
    for name, value in state_map.network_entries(state).items():
        if not name.endswith(".weight") or np.ndim(value) not in (2, 4):
            continue
        w = np.asarray(value, np.float64)
        ratios = range_ratios(w)
        rows.append(dict(layer=name[:-len(".weight")], shape=list(w.shape), sqnr_db=weight_sqnr(w),
                         range_mean=float(ratios.mean()) if ratios.size else None,
                         range_max=float(ratios.max()) if ratios.size else None))
    return rows


def calibration_folder(subject, calib_data):
    """``--calib_data``, else the training split beside the validation data (``data_dir/train_split``)."""
    if calib_data:
        return calib_data
    folder = os.path.join(subject.cfg["data_dir"], subject.cfg["train_split"])
    if not os.path.isdir(folder):
        raise UserError(f"{folder}: no training split to calibrate on; pass --calib_data DIR")
    return folder


def export_graphs(subject, folder, calib_data, samples, method, spec):
    """The fully folded model of ``subject`` as an FP32 ONNX graph and its INT8 quantization, in ``folder``.

    Returns ``(fp32 path, int8 path, calibration batches, folded state in the model's parameter order)``.
    """
    import mindspore as ms

    from ..io.checkpoint import mismatch, shapes_of
    from ..convert.pipeline import export_graph
    from ..models.factory import uninitialised_model
    from ..convert.quantize import calibration_batches, quantize_graph

    model, num_classes = _model_of(subject)
    state = folded_state(subject)
    net = uninitialised_model(model, num_classes, deploy=True)  # every parameter is set below
    problem = mismatch(state, shapes_of(net), allow_extra=True)
    if problem:
        raise UserError(f"{subject.path}: not a checkpoint of {model} (fully folded): {problem}")
    for param in net.get_parameters():
        param.set_data(ms.Tensor(np.asarray(state[param.name], ms.dtype_to_nptype(param.dtype))))
    net.set_train(False)
    size = subject.cfg["image_resize"]
    fp32, int8 = os.path.join(folder, "fp32.onnx"), os.path.join(folder, "int8.onnx")
    os.replace(export_graph(net, (1, 3, size, size), fp32, "onnx"), fp32)
    batches = calibration_batches(subject.cfg, calib_data, spec, samples, log=lambda *_: None)
    os.replace(quantize_graph(fp32, int8, batches, method), int8)
    return fp32, int8, len(batches), {p.name: state[p.name] for p in net.get_parameters()}


def quantization(subjects, calib_data=None, calib_samples=None, calib_method="minmax", log=print):
    """The ``quantization`` analysis: per-layer INT8 weight statistics, FP32 and INT8 top-1 per checkpoint."""
    import tempfile

    from ..convert.quantize import DEFAULT_CALIB_SAMPLES, check_calibration, check_method, runtime, score_graph

    samples = calib_samples or DEFAULT_CALIB_SAMPLES
    check_method(calib_method)
    runtime()
    check_kernels(subjects)
    check_data(subjects)
    folders = [calibration_folder(s, calib_data) for s in subjects]
    specs = [check_calibration(s.cfg, f, s.cfg["num_classes"]) for s, f in zip(subjects, folders)]
    rows = []
    quiet = lambda *_: None  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        for i, (s, folder, spec) in enumerate(zip(subjects, folders, specs)):
            work = os.path.join(tmp, str(i))
            os.makedirs(work)
            fp32, int8, used, state = export_graphs(s, work, folder, samples, calib_method, spec)
            layers = weight_layers(state)
            m32, m8 = score_graph(s.cfg, fp32, log=quiet), score_graph(s.cfg, int8, log=quiet)
            log(f"quantization {s.label}: FP32 top-1 {m32['top1']:.4f}, INT8 {m8['top1']:.4f}")
            rows.append(dict(label=s.label, ckpt_path=s.path, form=s.form, model=s.cfg["model"],
                             samples=m32["samples"], fp32_top1=m32["top1"], int8_top1=m8["top1"],
                             drop=m32["top1"] - m8["top1"], fp32_loss=m32["loss"], int8_loss=m8["loss"],
                             calibration=dict(folder=folder, images=used, method=calib_method), layers=layers))
    return {"analysis": "quantization", "definition": QUANTIZATION_DEFINITION, "metric": "top1",
            "checkpoints": rows}


def sqnr_summary(layers):
    """(min, median) of the finite per-layer SQNRs, and the layer of the minimum."""
    finite = [(r["sqnr_db"], r["layer"]) for r in layers if r["sqnr_db"] is not None and np.isfinite(r["sqnr_db"])]
    if not finite:
        return None, None, None
    low = min(finite)
    return low[0], float(np.median([v for v, _ in finite])), low[1]


def table_lines(result):
    """The printed table: per checkpoint FP32 and INT8 top-1, the drop, and the SQNR summary."""
    lines = []
    lines.append("quantization: " + result["definition"])
    lines.append(f"{'checkpoint':<16} {'form':<7} {'FP32':>7} {'INT8':>7} {'drop':>7} {'SQNR min':>9} "
                 f"{'median':>7} {'range max':>9}  layer of min SQNR")
    for row in result["checkpoints"]:
        low, median, where = sqnr_summary(row["layers"])
        top = max((r["range_max"] for r in row["layers"] if r["range_max"] is not None), default=float("nan"))
        lines.append(f"{row['label']:<16} {row['form']:<7} {row['fp32_top1']:>7.4f} {row['int8_top1']:>7.4f} "
                     f"{row['drop']:>+7.4f} {low if low is not None else float('nan'):>9.2f} "
                     f"{median if median is not None else float('nan'):>7.2f} {top:>9.2f}  {where}")
    return lines


def figure(result):
    """Per-layer SQNR curves and FP32 / INT8 top-1 bars."""
    plt = _pyplot()
    rows = result["checkpoints"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4), constrained_layout=True,
                                      gridspec_kw=dict(width_ratios=[2, 1]))
    for row in rows:
        values = [r["sqnr_db"] if r["sqnr_db"] is not None and np.isfinite(r["sqnr_db"]) else np.nan
                  for r in row["layers"]]
        left.plot(range(len(values)), values, marker="o", markersize=2.5, label=row["label"])
    left.set_xlabel("layer (network order)")
    left.set_ylabel("INT8 weight SQNR, dB")
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    x = np.arange(len(rows))
    right.bar(x - 0.2, [r["fp32_top1"] for r in rows], 0.4, label="FP32")
    right.bar(x + 0.2, [r["int8_top1"] for r in rows], 0.4, label="INT8")
    right.set_xticks(x)
    right.set_xticklabels([r["label"] for r in rows], rotation=45, ha="right", fontsize=7)
    right.set_ylabel("top-1 (onnxruntime)")
    right.set_ylim(0, 1)
    right.legend(fontsize=7)
    right.grid(axis="y", alpha=0.3)
    return fig
