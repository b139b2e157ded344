"""Kernel analyses of trained checkpoints: ACNet's Fig. 6 and 7 and its flip / rotation test.

Three analyses, each on one or several checkpoints side by side:

``magnitude``  (Fig. 7) For each k x k convolution layer (k > 1) of the BN-folded
    model, the k x k matrix ``A[y, x] = mean over (o, i) of |W[o, i, y, x]|``,
    divided by that layer's largest entry ``max A``; these matrices are then
    averaged over the layers of the same k.  Pure numpy: no model, no data.
``sparsity``   (Fig. 6) In every k x k kernel tensor, zero a random fraction r of
    the entries at the skeleton positions (centre row + centre column), at the
    corner positions (the rest of the window: the 4 corners for k = 3), or at
    all positions, and measure top-1 on the validation split; averaged over seeds.
``robustness`` top-1 on the validation images as they are, flipped left-right,
    flipped up-down, and rotated by 90, 180 and 270 degrees.
``quantization`` per layer of the fully folded model (every conv and dense
    weight), the INT8 weight quantization error as SQNR in dB (per-channel
    symmetric, :func:`acnet_ms.quantize.weight_sqnr`) and the range statistic
    max |w| / std per output channel; end to end, the top-1 of the fully folded
    model exported to ONNX (FP32) and quantized by onnxruntime (INT8), both
    scored in onnxruntime (:mod:`acnet_ms.quantize`, as ``convert.py --int8``
    and ``validate.py`` on the graphs).

Every checkpoint form gives the same numbers: an ACB training checkpoint is
folded in memory, a plain one is read as it is, a fully folded one
(``convert.py --fold_bn``) is already folded, and a stock MindCV checkpoint
(no metadata) is a plain one of the model ``--model`` names.  Kernels come out
of :mod:`acnet_ms.fold`'s functions; evaluation is :func:`acnet_ms.engine.eval_setup`
+ :func:`acnet_ms.engine.evaluate`, the code ``validate.py`` runs, so a top-1
here at r = 0 (or on unflipped images) is ``validate.py``'s number.

Results are plain dicts (written as JSON); figures are drawn from them with
matplotlib, an optional dependency (``requirements-study.txt``).
"""
import json
import os
from dataclasses import dataclass, field

import numpy as np

from . import state as state_map
from .cli import UserError

COMMANDS = ("magnitude", "sparsity", "robustness", "quantization")

#: position groups of the sparsity analysis
GROUPS = ("skeleton", "corner", "all")

#: default sparsity ratios 0, 0.1, ..., 0.9, and seeds
DEFAULT_RATIOS = tuple(i / 10 for i in range(10))
DEFAULT_SEEDS = (0, 1, 2)

#: input transforms of the robustness analysis, on NCHW batches (rotations counter-clockwise as displayed)
TRANSFORMS = {
    "identity": lambda x: x,
    "flip_lr": lambda x: x[..., :, ::-1],
    "flip_ud": lambda x: x[..., ::-1, :],
    "rot90": lambda x: np.rot90(x, 1, axes=(-2, -1)),
    "rot180": lambda x: np.rot90(x, 2, axes=(-2, -1)),
    "rot270": lambda x: np.rot90(x, 3, axes=(-2, -1)),
}

QUANTIZATION_DEFINITION = (
    "per conv / dense weight of the fully folded model: SQNR = 10 log10(sum w^2 / sum (w - q(w))^2) dB with q the "
    "per-output-channel symmetric INT8 round trip (scale max|w_c| / 127); range = max|w_c| / std(w_c) per output "
    "channel (mean and max over channels); top-1 of the FP32 ONNX graph and of onnxruntime's static INT8 "
    "quantization of it (QDQ, per-channel weights), both in onnxruntime")

MAGNITUDE_DEFINITION = (
    "per k x k conv layer (k > 1) of the BN-folded model: A[y, x] = mean over output and input channels "
    "of |W[o, i, y, x]|, divided by max(A); averaged over the layers of the same k (all-zero layers skipped)")


# ---------------------------------------------------------------- the fold functions (one adapter each)

def _model_of(subject):
    """``(model, num_classes)`` of a subject: its options, else what the checkpoint recorded."""
    model = subject.cfg.get("model") or subject.meta.get("model")
    if not model:
        raise UserError(f"{subject.path}: the checkpoint does not record its model; pass --model NAME")
    return model, subject.cfg.get("num_classes") or subject.meta.get("num_classes")


def _fold_acbs(subject):
    """Fold every ACB of a checkpoint into plain conv + BN entries; returns (state, ACB names).

    Where each ACB's fold goes comes from the model (``transform.layout_for``)."""
    from .transform import layout_for

    arrays = subject.arrays
    if not state_map.acb_prefixes(arrays):
        return state_map.network_entries(arrays), []
    model, num_classes = _model_of(subject)
    return state_map.fold_state(arrays, layout_for(model, num_classes, subject.meta))


def _fold_bns(subject, state):
    """Fold every BatchNorm that follows a conv into it (the model's own conv/BN pairs, those present)."""
    from .models import create_model

    model, num_classes = _model_of(subject)
    pairs = create_model(model, num_classes=num_classes, deploy=True)._fused_pairs
    return state_map.fold_bns(state, [p for p in pairs if p[0] + ".weight" in state])[0]


# ---------------------------------------------------------------- checkpoints

@dataclass
class Subject:
    """One checkpoint under analysis: its arrays, metadata, and validate.py's options for it."""
    label: str
    path: str
    arrays: dict
    meta: dict
    cfg: dict = field(default_factory=dict)

    @property
    def form(self):
        """``folded`` (convert.py --fold_bn), ``acb`` (ACB training form) or ``plain``."""
        if self.meta.get("deploy"):
            return "folded"
        return "acb" if self.plain_state()[1] else "plain"

    def plain_state(self):
        """``(state, acb_names)``: the checkpoint as plain-model entries (ACBs folded, trainer entries dropped)."""
        if "_plain" not in self.__dict__:
            if self.meta.get("deploy"):
                self._plain = state_map.network_entries(self.arrays), []
            else:
                try:
                    self._plain = _fold_acbs(self)
                except ValueError as err:
                    raise UserError(f"{self.path}: {err}") from None
        return self._plain


def load_subject(path, label=None, argv=()):
    """Read the checkpoint ``path``; its evaluation options are validate.py's.

    That is: the options the checkpoint recorded, overridden by ``argv``
    (``--config FILE`` and ``--option value`` pairs, as validate.py takes them).
    """
    from . import config
    from .checkpoint import read_checkpoint
    from .engine import recorded_options

    arrays, meta = read_checkpoint(path)
    cfg, _ = config.parse(list(argv), "analysis options", base=recorded_options(meta))
    cfg["ckpt_path"] = path
    if label is None:
        label = os.path.splitext(os.path.basename(path))[0]
    return Subject(label, path, arrays, meta, cfg)


def is_square_kernel(name, shape):
    """True for a k x k conv kernel: a 4-d ``*.weight`` with equal spatial sizes k > 1."""
    return name.endswith(".weight") and len(shape) == 4 and shape[2] == shape[3] > 1


def square_kernel_names(state):
    """Names of the k x k conv kernels of a checkpoint dict, in its order."""
    return [name for name, value in state_map.network_entries(state).items()
            if is_square_kernel(name, np.shape(value))]


def folded_kernels(subject):
    """Layer name -> BN-folded k x k kernel (numpy, float64) of ``subject``; UserError if it has none."""
    state, _ = subject.plain_state()
    if not subject.meta.get("deploy"):
        try:
            state = _fold_bns(subject, state)
        except ValueError as err:
            raise UserError(f"{subject.path}: {err}") from None
    names = square_kernel_names(state)
    if not names:
        raise UserError(f"{subject.path}: no k x k convolution (k > 1) to analyse")
    return {name[:-len(".weight")]: np.asarray(state[name], np.float64) for name in names}


# ---------------------------------------------------------------- positions

def position_mask(k, group):
    """Boolean k x k mask of a position group.

    ``skeleton``: the centre row and centre column (2k - 1 entries, k odd);
    ``corner``: every other entry (for k = 3 exactly the 4 corners);
    ``all``: the whole window.  For even k the "centre" is row and column k // 2.
    """
    if group not in GROUPS:
        raise ValueError(f"unknown position group {group!r}; known: {', '.join(GROUPS)}")
    skeleton = np.zeros((k, k), bool)
    skeleton[k // 2, :] = True
    skeleton[:, k // 2] = True
    return {"skeleton": skeleton, "corner": ~skeleton, "all": np.ones((k, k), bool)}[group]


def group_means(matrix):
    """Mean of a k x k matrix over its centre, skeleton and corner positions."""
    matrix = np.asarray(matrix)
    k = matrix.shape[0]
    return {"centre": float(matrix[k // 2, k // 2]),
            "skeleton": float(matrix[position_mask(k, "skeleton")].mean()),
            "corner": float(matrix[position_mask(k, "corner")].mean())}


# ---------------------------------------------------------------- magnitude

def layer_magnitude(kernel):
    """The k x k matrix of mean |W| over output and input channels, divided by its largest entry.

    None for an all-zero kernel (no largest entry to divide by).
    """
    a = np.abs(np.asarray(kernel, np.float64)).mean(axis=(0, 1))
    top = a.max()
    return None if top == 0 else a / top


def kernel_magnitudes(kernels):
    """Magnitude matrices of named k x k kernels: ``{"sizes": {k: ...}, "layers": {name: matrix}}``.

    ``sizes[k]`` holds ``matrix`` (the average of the layers' normalised
    matrices), ``layers`` (how many were averaged), ``skipped`` (all-zero
    layers) and the matrix's centre / skeleton / corner means.
    """
    per_size, skipped, layers = {}, {}, {}
    for name, kernel in kernels.items():
        k = int(np.shape(kernel)[2])
        m = layer_magnitude(kernel)
        if m is None:
            skipped[k] = skipped.get(k, 0) + 1
            continue
        per_size.setdefault(k, []).append(m)
        layers[name] = m.tolist()
    sizes = {}
    for k in sorted(set(per_size) | set(skipped)):
        mats = per_size.get(k, [])
        entry = dict(layers=len(mats), skipped=skipped.get(k, 0))
        if mats:
            mean = np.mean(mats, axis=0)
            entry.update(matrix=mean.tolist(), **group_means(mean))
        sizes[str(k)] = entry
    return {"sizes": sizes, "layers": layers}


def magnitude(subjects):
    """The ``magnitude`` analysis of several checkpoints (a JSON-ready dict)."""
    rows = []
    for s in subjects:
        result = kernel_magnitudes(folded_kernels(s))
        rows.append(dict(label=s.label, ckpt_path=s.path, form=s.form, model=s.meta.get("model"), **result))
    return {"analysis": "magnitude", "definition": MAGNITUDE_DEFINITION, "checkpoints": rows}


# ---------------------------------------------------------------- sparsity

def sparsify(kernel, group, ratio, rng):
    """A copy of the (O, I, k, k) ``kernel`` with round(ratio * n) of its n entries in ``group`` zeroed.

    The entries are the first ones of a random permutation drawn from ``rng``,
    so for one seed the set zeroed at a ratio contains the set zeroed at every
    smaller ratio.
    """
    kernel = np.array(kernel, copy=True)
    k = kernel.shape[2]
    mask = np.broadcast_to(position_mask(k, group), kernel.shape)
    index = np.flatnonzero(mask)
    order = rng.permutation(index.size)
    count = int(np.floor(ratio * index.size + 0.5))
    flat = kernel.reshape(-1)
    flat[index[order[:count]]] = 0
    return kernel


def sparsify_all(kernels, group, ratio, seed):
    """``sparsify`` every named kernel (name -> array, in the network's order), one random stream per seed."""
    rng = np.random.default_rng(seed)
    return {name: sparsify(value, group, ratio, rng) for name, value in kernels.items()}


class Evaluator:
    """The validation network and loader of one checkpoint, built once; weights swapped per evaluation.

    The network is the plain one (``block_type: base``; an ACB checkpoint is
    folded in memory by the loader's fold) or, for a fully folded checkpoint,
    the fully folded one, built and loaded by :func:`acnet_ms.engine.eval_setup`.
    """

    def __init__(self, subject, log=print):
        from .engine import eval_setup

        cfg = dict(subject.cfg)
        if not subject.meta.get("deploy"):
            cfg["block_type"] = "base"
        self.net, self.loader, self.world = eval_setup(cfg, subject.arrays,
                                                       folded_bn=bool(subject.meta.get("deploy")), log=log,
                                                       meta=subject.meta)
        self.params = {p.name: p for p in self.net.get_parameters() if is_square_kernel(p.name, tuple(p.shape))}
        if not self.params:
            raise UserError(f"{subject.path}: no k x k convolution (k > 1) to analyse")
        self.kernels = {name: p.asnumpy() for name, p in self.params.items()}

    def evaluate(self, kernels=None, transform=None):
        """validate.py's metrics dict, with ``kernels`` (name -> array) in place of the checkpoint's.

        The checkpoint's kernels are put back afterwards; ``transform`` maps
        each NCHW image batch (see :func:`acnet_ms.engine.evaluate`).
        """
        from .engine import evaluate

        try:
            self._load(kernels or {})
            return evaluate(self.net, self.loader, self.world, transform=transform)
        finally:
            if kernels:
                self._load(self.kernels)

    def _load(self, kernels):
        import mindspore as ms

        for name, value in kernels.items():
            param = self.params[name]
            param.set_data(ms.Tensor(np.ascontiguousarray(value, dtype=ms.dtype_to_nptype(param.dtype))))


def check_data(subjects):
    """Check every checkpoint's validation data before any evaluation starts."""
    from . import data

    for s in subjects:
        spec = data.inspect(s.cfg, "val")
        data.check_num_classes(spec, s.cfg["num_classes"], "validation")


def check_kernels(subjects):
    for s in subjects:
        if not square_kernel_names(s.plain_state()[0]):
            raise UserError(f"{s.path}: no k x k convolution (k > 1) to analyse")


def sparsity(subjects, ratios=DEFAULT_RATIOS, groups=GROUPS, seeds=DEFAULT_SEEDS, log=print):
    """The ``sparsity`` analysis: top-1 per checkpoint, position group, ratio (mean and per seed).

    At r = 0 nothing is zeroed: the value is the unmodified network's top-1,
    evaluated once (``reference``), which is validate.py's number.
    """
    ratios, groups, seeds = [float(r) for r in ratios], list(groups), [int(s) for s in seeds]
    check_ratios(ratios)
    check_known(groups, GROUPS, "position group")
    check_kernels(subjects)
    check_data(subjects)
    rows = []
    for s in subjects:
        ev = Evaluator(s, log=lambda *_: None)
        reference = ev.evaluate()
        log(f"sparsity {s.label}: {len(ev.kernels)} k x k layers, top-1 {reference['top1']:.4f} unmodified, "
            f"{len(groups) * sum(r > 0 for r in ratios) * len(seeds)} evaluations")
        curves = {}
        for g in groups:
            per_seed = []
            for seed in seeds:
                row = []
                for r in ratios:
                    if r == 0:
                        row.append(reference["top1"])
                    else:
                        row.append(ev.evaluate(sparsify_all(ev.kernels, g, r, seed))["top1"])
                per_seed.append(row)
            per_seed = np.array(per_seed)
            curves[g] = dict(mean=per_seed.mean(axis=0).tolist(), min=per_seed.min(axis=0).tolist(),
                             max=per_seed.max(axis=0).tolist(), per_seed=per_seed.tolist())
        rows.append(dict(label=s.label, ckpt_path=s.path, form=s.form, model=s.cfg["model"],
                         samples=reference["samples"], reference=reference["top1"], curves=curves))
    return {"analysis": "sparsity", "ratios": ratios, "groups": groups, "seeds": seeds,
            "metric": "top1", "checkpoints": rows}


def check_known(values, known, what):
    """UserError naming the first of ``values`` that ``known`` does not hold."""
    unknown = [v for v in values if v not in known]
    if unknown:
        raise UserError(f"unknown {what} '{unknown[0]}'; known: {', '.join(known)}")


def check_ratios(ratios):
    if not ratios:
        raise UserError("--ratios: give at least one ratio")
    for r in ratios:
        if not 0.0 <= r <= 1.0:
            raise UserError(f"--ratios: {r:g} is outside [0, 1]")


# ---------------------------------------------------------------- robustness

def robustness(subjects, transforms=tuple(TRANSFORMS), log=print):
    """The ``robustness`` analysis: top-1 per checkpoint on transformed validation batches."""
    transforms = list(transforms)
    if not transforms:
        raise UserError("give at least one transform")
    check_known(transforms, TRANSFORMS, "transform")
    check_kernels(subjects)
    check_data(subjects)
    rows = []
    for s in subjects:
        ev = Evaluator(s, log=lambda *_: None)
        metrics = {t: ev.evaluate(transform=TRANSFORMS[t]) for t in transforms}
        log(f"robustness {s.label}: {len(transforms)} evaluations")
        rows.append(dict(label=s.label, ckpt_path=s.path, form=s.form, model=s.cfg["model"],
                         samples=metrics[transforms[0]]["samples"],
                         top1={t: m["top1"] for t, m in metrics.items()}))
    return {"analysis": "robustness", "transforms": list(transforms), "metric": "top1", "checkpoints": rows}


# ---------------------------------------------------------------- quantization

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
    from .quantize import range_ratios, weight_sqnr

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

    from .checkpoint import mismatch, shapes_of
    from .deploy import export_graph
    from .models import create_model
    from .quantize import calibration_batches, quantize_graph

    model, num_classes = _model_of(subject)
    state = folded_state(subject)
    net = create_model(model, num_classes=num_classes, deploy=True)
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

    from .quantize import DEFAULT_CALIB_SAMPLES, check_calibration, check_method, runtime, score_graph

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


# ---------------------------------------------------------------- tables

def table(result):
    """The printed table of a result dict."""
    kind = result["analysis"]
    lines = []
    if kind == "magnitude":
        lines.append("magnitude: " + result["definition"])
        lines.append(f"{'checkpoint':<16} {'form':<7} {'k':>2} {'layers':>6} {'centre':>7} {'skeleton':>9} "
                     f"{'corner':>7}")
        for row in result["checkpoints"]:
            for k, e in row["sizes"].items():
                if "matrix" not in e:
                    lines.append(f"{row['label']:<16} {row['form']:<7} {k:>2} {e['layers']:>6} (all-zero layers only)")
                    continue
                lines.append(f"{row['label']:<16} {row['form']:<7} {k:>2} {e['layers']:>6} {e['centre']:>7.3f} "
                             f"{e['skeleton']:>9.3f} {e['corner']:>7.3f}")
        for row in result["checkpoints"]:
            for k, e in row["sizes"].items():
                if "matrix" in e:
                    lines.append(f"{row['label']} {k}x{k}:")
                    lines += ["  " + " ".join(f"{v:.3f}" for v in r) for r in e["matrix"]]
    elif kind == "sparsity":
        ratios = result["ratios"]
        lines.append(f"sparsity: top-1 (mean over seeds {', '.join(map(str, result['seeds']))}) "
                     f"with a fraction r of each k x k kernel's entries at the group's positions zeroed")
        lines.append(f"{'checkpoint':<16} {'group':<9} " + " ".join(f"{'r=' + format(r, 'g'):>6}" for r in ratios))
        for row in result["checkpoints"]:
            for g, c in row["curves"].items():
                lines.append(f"{row['label']:<16} {g:<9} " + " ".join(f"{v:>6.4f}" for v in c["mean"]))
    elif kind == "quantization":
        lines.append("quantization: " + result["definition"])
        lines.append(f"{'checkpoint':<16} {'form':<7} {'FP32':>7} {'INT8':>7} {'drop':>7} {'SQNR min':>9} "
                     f"{'median':>7} {'range max':>9}  layer of min SQNR")
        for row in result["checkpoints"]:
            low, median, where = sqnr_summary(row["layers"])
            top = max((r["range_max"] for r in row["layers"] if r["range_max"] is not None), default=float("nan"))
            lines.append(f"{row['label']:<16} {row['form']:<7} {row['fp32_top1']:>7.4f} {row['int8_top1']:>7.4f} "
                         f"{row['drop']:>+7.4f} {low if low is not None else float('nan'):>9.2f} "
                         f"{median if median is not None else float('nan'):>7.2f} {top:>9.2f}  {where}")
    elif kind == "robustness":
        ts = result["transforms"]
        lines.append("robustness: top-1 on the validation images transformed")
        lines.append(f"{'checkpoint':<16} " + " ".join(f"{t:>8}" for t in ts))
        for row in result["checkpoints"]:
            lines.append(f"{row['label']:<16} " + " ".join(f"{row['top1'][t]:>8.4f}" for t in ts))
    return "\n".join(lines)


# ---------------------------------------------------------------- figures

def require_matplotlib():
    """UserError (one line, how to install it) when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError("the figures need matplotlib, which is not installed: "
                        "pip install -r requirements-study.txt") from None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure(result):
    """A matplotlib Figure of a result dict."""
    plt = _pyplot()
    kind = result["analysis"]
    rows = result["checkpoints"]
    if kind == "magnitude":
        sizes = sorted({int(k) for r in rows for k, e in r["sizes"].items() if "matrix" in e})
        fig, axes = plt.subplots(len(sizes), len(rows), figsize=(2.8 * len(rows) + 0.6, 2.8 * len(sizes)),
                                 squeeze=False, constrained_layout=True)
        image = None
        for i, k in enumerate(sizes):
            for j, row in enumerate(rows):
                ax = axes[i][j]
                e = row["sizes"].get(str(k), {})
                if "matrix" not in e:
                    ax.axis("off")
                    continue
                m = np.array(e["matrix"])
                image = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
                for (y, x), v in np.ndenumerate(m):
                    ax.text(x, y, f"{v:.2f}", ha="center", va="center", fontsize=max(5, 11 - k),
                            color="black" if v > 0.6 else "white")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{row['label']}: {k}x{k}, {e['layers']} layers", fontsize=9)
        if image is not None:
            fig.colorbar(image, ax=axes, shrink=0.8, label="normalised mean |W|")
        return fig
    if kind == "sparsity":
        fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 3.2), squeeze=False, sharey=True,
                                 constrained_layout=True)
        ratios = result["ratios"]
        for ax, row in zip(axes[0], rows):
            for g, c in row["curves"].items():
                line, = ax.plot(ratios, c["mean"], marker="o", markersize=3, label=g)
                ax.fill_between(ratios, c["min"], c["max"], color=line.get_color(), alpha=0.2, linewidth=0)
            ax.set_title(row["label"], fontsize=10)
            ax.set_xlabel("sparsity ratio r")
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("top-1 (band: min-max over seeds)")
        axes[0][0].legend(fontsize=8)
        return fig
    if kind == "quantization":
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
    ts = result["transforms"]
    fig, ax = plt.subplots(figsize=(1.2 * len(ts) + 0.4 * len(rows) + 1.5, 3.2), constrained_layout=True)
    width = 0.8 / max(1, len(rows))
    x = np.arange(len(ts))
    for j, row in enumerate(rows):
        ax.bar(x + (j - (len(rows) - 1) / 2) * width, [row["top1"][t] for t in ts], width, label=row["label"])
    ax.set_xticks(x)
    ax.set_xticklabels(ts)
    ax.set_ylabel("top-1")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


# ---------------------------------------------------------------- output

def write(result, out_dir):
    """Write ``<analysis>.json`` and ``<analysis>.png`` into ``out_dir`` (created if needed), atomically.

    Both files are first written under temporary names in ``out_dir`` and
    renamed only once both are complete.  Returns the two paths.
    """
    name = result["analysis"]
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise UserError(f"{out_dir}: cannot create the output folder ({err.strerror})") from None
    paths = [os.path.join(out_dir, f"{name}.json"), os.path.join(out_dir, f"{name}.png")]
    tmps = [os.path.join(out_dir, f".{os.path.basename(p)}.{os.getpid()}.tmp") for p in paths]
    try:
        with open(tmps[0], "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
        fig = figure(result)
        try:
            fig.savefig(tmps[1], format="png", dpi=110)
        finally:
            _pyplot().close(fig)
        for tmp, path in zip(tmps, paths):
            os.replace(tmp, path)
    except OSError as err:
        raise UserError(f"{out_dir}: cannot write {name} results ({err.strerror})") from None
    finally:
        for tmp in tmps:
            if os.path.exists(tmp):
                os.remove(tmp)
    return paths
