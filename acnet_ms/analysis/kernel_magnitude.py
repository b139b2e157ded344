"""``magnitude`` (ACNet's Fig. 7): the mean kernel magnitude at each k x k position.

For each k x k convolution layer (k > 1) of the BN-folded model, the k x k
matrix ``A[y, x] = mean over (o, i) of |W[o, i, y, x]|``, divided by that
layer's largest entry ``max A``; these matrices are then averaged over the
layers of the same k.  Pure numpy: no model, no data.
"""
import numpy as np

from .common import _pyplot, folded_kernels, position_mask

MAGNITUDE_DEFINITION = (
    "per k x k conv layer (k > 1) of the BN-folded model: A[y, x] = mean over output and input channels "
    "of |W[o, i, y, x]|, divided by max(A); averaged over the layers of the same k (all-zero layers skipped)")


def group_means(matrix):
    """Mean of a k x k matrix over its centre, skeleton and corner positions."""
    matrix = np.asarray(matrix)
    k = matrix.shape[0]
    return {"centre": float(matrix[k // 2, k // 2]),
            "skeleton": float(matrix[position_mask(k, "skeleton")].mean()),
            "corner": float(matrix[position_mask(k, "corner")].mean())}


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


def table_lines(result):
    """The printed table of a ``magnitude`` result, as lines."""
    lines = ["magnitude: " + result["definition"],
             f"{'checkpoint':<16} {'form':<7} {'k':>2} {'layers':>6} {'centre':>7} {'skeleton':>9} {'corner':>7}"]
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
    return lines


def figure(result):
    """One heat map per kernel size and checkpoint, the matrices' values written in."""
    plt = _pyplot()
    rows = result["checkpoints"]
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
