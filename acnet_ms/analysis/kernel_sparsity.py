"""``sparsity`` (ACNet's Fig. 6): top-1 with a random fraction of the kernels' entries zeroed by position.

In every k x k kernel tensor, zero a random fraction r of the entries at the
skeleton positions (centre row + centre column), at the corner positions (the
rest of the window: the 4 corners for k = 3), or at all positions, and measure
top-1 on the validation split; averaged over seeds.
"""
import numpy as np

from ..cli import UserError
from .common import GROUPS, Evaluator, _pyplot, check_data, check_kernels, check_known, position_mask

#: default sparsity ratios 0, 0.1, ..., 0.9, and seeds
DEFAULT_RATIOS = tuple(i / 10 for i in range(10))
DEFAULT_SEEDS = (0, 1, 2)


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


def check_ratios(ratios):
    if not ratios:
        raise UserError("--ratios: give at least one ratio")
    for r in ratios:
        if not 0.0 <= r <= 1.0:
            raise UserError(f"--ratios: {r:g} is outside [0, 1]")


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


def table_lines(result):
    """The printed table of a ``sparsity`` result, as lines."""
    ratios = result["ratios"]
    lines = [f"sparsity: top-1 (mean over seeds {', '.join(map(str, result['seeds']))}) "
             f"with a fraction r of each k x k kernel's entries at the group's positions zeroed",
             f"{'checkpoint':<16} {'group':<9} " + " ".join(f"{'r=' + format(r, 'g'):>6}" for r in ratios)]
    for row in result["checkpoints"]:
        for g, c in row["curves"].items():
            lines.append(f"{row['label']:<16} {g:<9} " + " ".join(f"{v:>6.4f}" for v in c["mean"]))
    return lines


def figure(result):
    """top-1 against the ratio, one panel per checkpoint, one curve per group (band: min-max over seeds)."""
    plt = _pyplot()
    rows = result["checkpoints"]
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
