"""``robustness``: top-1 on the validation images as they are, flipped left-right and up-down, and rotated."""
import numpy as np

from ..cli import UserError
from .common import Evaluator, _pyplot, check_data, check_kernels, check_known

#: input transforms of the robustness analysis, on NCHW batches (rotations counter-clockwise as displayed)
TRANSFORMS = {
    "identity": lambda x: x,
    "flip_lr": lambda x: x[..., :, ::-1],
    "flip_ud": lambda x: x[..., ::-1, :],
    "rot90": lambda x: np.rot90(x, 1, axes=(-2, -1)),
    "rot180": lambda x: np.rot90(x, 2, axes=(-2, -1)),
    "rot270": lambda x: np.rot90(x, 3, axes=(-2, -1)),
}


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


def table_lines(result):
    """The printed table of a ``robustness`` result, as lines."""
    ts = result["transforms"]
    lines = ["robustness: top-1 on the validation images transformed",
             f"{'checkpoint':<16} " + " ".join(f"{t:>8}" for t in ts)]
    for row in result["checkpoints"]:
        lines.append(f"{row['label']:<16} " + " ".join(f"{row['top1'][t]:>8.4f}" for t in ts))
    return lines


def figure(result):
    """Bars of top-1 per transform, one per checkpoint."""
    plt = _pyplot()
    rows, ts = result["checkpoints"], result["transforms"]
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
