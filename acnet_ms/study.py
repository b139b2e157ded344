"""``make study``: ACNet's ablations and kernel analyses, reproduced small on the embedded digits.

Trains the plain model, the ACB model and its variants (1 x k only, k x 1 only,
no BN in the branches, asymmetric kernels on the border) and the other kinds
(DBB, OREPA, RepVGG-style ``rep``), several seeds each,
through ``train.py``; runs ``analyze.py``'s four analyses on every checkpoint
through :mod:`acnet_ms.analysis` (the fourth, INT8 post-training quantization
in onnxruntime, calibrated on the training split); and writes ``report.md`` with tables,
figures and, for each of the paper's observations, whether this run shows it
and whether the difference is larger than the seed-to-seed spread.

    python -m acnet_ms.study [--out study_out] [--seeds 2] [--epochs 12] [--per_class 40] [--reuse]

The setting (and why): scikit-learn's 8 x 8 digits upsampled to 16 x 16, the
CIFAR ResNet-20 (``src20``, 19 3 x 3 convs), trained on ``per_class`` images
of each digit (400 by default) and validated on all 359 held-out ones.  With
the full training split every form reaches ~98 % (see ``make demo``) and the
forms cannot differ; with a tenth of it they stay in the 80-95 % range, where
the branches' regularising effect can show.  Every form's block starts at the plain conv's scale: ACB's three branch BNs at gamma
1/3 (ACNet's CIFAR recipe, the package's ``configs/demo_digits.yaml``), DBB's four at 1/4 and
rep's (up to) three at 1/3 alike; OREPA's branch scales start as its paper's.
With gamma 1 the sum of the branches starts two to four times larger and src20's
residual stages amplify it (measured: first-epoch loss 7.6 for DBB, 4.4 for rep,
2.4 for base), which would compare initialisations, not blocks.
Rotations and flips of digits
change their meaning (a flipped 2 is no digit, a rotated 6 is a 9), so
robustness is a comparison between forms, not an absolute.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from .demo import DEMO_CONFIG, program, program_env, write_digits
from .cli import quiet_mindspore

quiet_mindspore()  # before MindSpore is imported (the training package imports it): its logs stay critical

from .training.setup import clear_run  # noqa: E402

#: the forms trained, and the train.py options that make each
VARIANTS = {
    "base": ["--block_type", "base"],
    "acb": ["--block_type", "acb"],
    "acb_h": ["--block_type", "acb", "--block_options", "{branches: h}"],
    "acb_v": ["--block_type", "acb", "--block_options", "{branches: v}"],
    "acb_nobn": ["--block_type", "acb", "--block_options", "{branch_bn: false}"],
    "acb_corner": ["--block_type", "acb", "--block_options", "{position: corner}"],
    "dbb": ["--block_type", "dbb", "--block_options", "{gamma_init: 0.25}"],
    "orepa": ["--block_type", "orepa"],
    "rep": ["--block_type", "rep", "--block_options", "{gamma_init: 0.3333333333}"],
    "rep_qa": ["--block_type", "rep", "--block_options", "{quant_aware: true}"],
}
RATIOS = tuple(i / 10 for i in range(10))

#: what a finished run leaves in its folder: the command that made it and its checkpoint (--reuse)
RUN_MARKER = "study_run.json"


def write_list(data, out, per_class):
    """A training list of the first ``per_class`` images of each digit (sorted names): its path."""
    lines = []
    for label in range(10):
        names = sorted(os.listdir(os.path.join(data, "train", str(label))))[:per_class]
        lines += [f"train/{label}/{name} {label}" for name in names]
    path = os.path.join(out, f"train_{per_class}_per_class.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def run_args(data, train_list, run_dir, variant, seed, epochs):
    """train.py's options for one form and seed."""
    args = ["--config", DEMO_CONFIG, "--data_dir", data, "--train_list", train_list,
            "--ckpt_save_dir", run_dir, "--seed", seed, "--epoch_size", epochs, "--val_while_train", "False",
            "--keep_checkpoint_max", 1, "--log_interval", 1000, *VARIANTS[variant]]
    return [str(a) for a in args]


def train_run(data, train_list, run_dir, variant, seed, epochs, reuse=False):
    """Train one form with one seed through train.py; returns its last checkpoint's path.

    ``reuse``: keep the folder's run if it was made by the same command line and its checkpoint is there
    (training is deterministic: the same command gives the same checkpoint); otherwise, or without
    ``reuse``, the folder is cleared and the form trained afresh.
    """
    args = run_args(data, train_list, run_dir, variant, seed, epochs)
    marker = os.path.join(run_dir, RUN_MARKER)
    if reuse and os.path.exists(marker):
        with open(marker, encoding="utf-8") as f:
            done = json.load(f)
        if done.get("args") == args and os.path.exists(done.get("last", "")):
            return done["last"]
    clear_run(run_dir)  # the study's own folder: a second make study starts afresh
    proc = subprocess.run(program("train") + args, env=program_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"study: training {variant} (seed {seed}) failed: {proc.stderr.strip().splitlines()[-1:]}")
    last = [ln.split(": ", 1)[1] for ln in proc.stdout.splitlines() if ln.startswith("last checkpoint: ")][-1]
    with open(marker + ".tmp", "w", encoding="utf-8") as f:
        json.dump(dict(args=args, last=last), f)
    os.replace(marker + ".tmp", marker)
    return last


def spread(values):
    return float(max(values) - min(values))


def by_variant(rows, value, seeds):
    """{variant: [value(row) for each seed]} from analysis rows labelled ``<variant>/s<seed>``."""
    out = {}
    for row in rows:
        variant = row["label"].rsplit("/", 1)[0]
        out.setdefault(variant, []).append(value(row))
    return {v: vals[:seeds] for v, vals in out.items()}


def compare(a, b):
    """``(difference of means, inside the seed-to-seed spread?)`` of two lists of per-seed values."""
    delta = float(np.mean(a) - np.mean(b))
    return delta, abs(delta) <= max(spread(a), spread(b))


def observation(text, holds, delta, inside, unit="top-1"):
    verdict = "shown" if holds else "not shown"
    if holds and inside:
        verdict += ", but inside the seed-to-seed spread"
    return f"| {text} | {delta:+.4f} {unit} | {verdict} |"


def skeleton_ratio(row):
    e = row["sizes"]["3"]
    return e["skeleton"] / e["corner"]


def auc(curve):
    return float(np.mean(curve["mean"]))


def figures(out, mag, sp, rob, variants):
    """Per-form figures, averaged over seeds: magnitude heatmaps, sparsity curves, robustness bars."""
    from .analysis.common import _pyplot

    plt = _pyplot()
    paths = {}
    mats = by_variant(mag["checkpoints"], lambda r: np.array(r["sizes"]["3"]["matrix"]), 99)
    fig, axes = plt.subplots(1, len(variants), figsize=(2.3 * len(variants), 2.6), constrained_layout=True)
    for ax, v in zip(axes, variants):
        m = np.mean(mats[v], axis=0)
        m = m / m.max()
        ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        for (y, x), val in np.ndenumerate(m):
            ax.text(x, y, f"{val:.2f}", ha="center", va="center", fontsize=8, color="black" if val > 0.6 else "white")
        ax.set_title(v, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    paths["magnitude"] = _save(fig, plt, os.path.join(out, "magnitude.png"))
    fig, axes = plt.subplots(1, len(sp["groups"]), figsize=(3.4 * len(sp["groups"]), 3.0), sharey=True,
                             constrained_layout=True)
    for ax, g in zip(axes, sp["groups"]):
        curves = by_variant(sp["checkpoints"], lambda r: r["curves"][g]["mean"], 99)
        for v in variants:
            ax.plot(sp["ratios"], np.mean(curves[v], axis=0), marker="o", markersize=2.5, label=v)
        ax.set_title(f"zeroing {g} entries", fontsize=9)
        ax.set_xlabel("ratio r")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 (mean over seeds)")
    axes[0].legend(fontsize=7)
    paths["sparsity"] = _save(fig, plt, os.path.join(out, "sparsity.png"))
    ts = rob["transforms"]
    tops = by_variant(rob["checkpoints"], lambda r: [r["top1"][t] for t in ts], 99)
    fig, ax = plt.subplots(figsize=(1.3 * len(ts) + 2, 3.0), constrained_layout=True)
    width = 0.8 / len(variants)
    for j, v in enumerate(variants):
        vals = np.array(tops[v])
        ax.bar(np.arange(len(ts)) + (j - (len(variants) - 1) / 2) * width, vals.mean(axis=0), width,
               yerr=[vals.mean(axis=0) - vals.min(axis=0), vals.max(axis=0) - vals.mean(axis=0)], label=v,
               error_kw=dict(lw=0.6))
    ax.set_xticks(np.arange(len(ts)))
    ax.set_xticklabels(ts)
    ax.set_ylabel("top-1 (bars: min-max over seeds)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=3)
    ax.grid(axis="y", alpha=0.3)
    paths["robustness"] = _save(fig, plt, os.path.join(out, "robustness.png"))
    return paths


def _save(fig, plt, path):
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def int8_section(quant, seeds):
    """The report's INT8 table and, per re-parameterized form, whether it loses more than base under INT8."""
    fp32 = by_variant(quant["checkpoints"], lambda r: r["fp32_top1"], seeds)
    int8 = by_variant(quant["checkpoints"], lambda r: r["int8_top1"], seeds)
    drop = by_variant(quant["checkpoints"], lambda r: r["drop"], seeds)
    sqnr = by_variant(quant["checkpoints"], lambda r: analysis_sqnr_min(r), seeds)
    calib = quant["checkpoints"][0]["calibration"]
    lines = ["", "## INT8 (post-training quantization in onnxruntime)", "",
             f"Each checkpoint fully folded, exported to ONNX, quantized by onnxruntime's static quantization "
             f"(QDQ, per-channel symmetric INT8 weights, UINT8 activations; {calib['images']} calibration images "
             f"of the training split, {calib['method']}) and scored in onnxruntime on the validation images "
             f"(`analyze.py quantization`). Drop = FP32 − INT8 top-1.", "",
             "| form | FP32 top-1 (per seed) | INT8 top-1 (per seed) | drop, mean | drop range | "
             "min weight SQNR, dB |", "|---|---|---|---|---|---|"]
    for v in VARIANTS:
        lines.append(f"| {v} | " + ", ".join(f"{x:.4f}" for x in fp32[v]) + " | " +
                     ", ".join(f"{x:.4f}" for x in int8[v]) +
                     f" | {np.mean(drop[v]):+.4f} | {spread(drop[v]):.4f} | {np.mean(sqnr[v]):.1f} |")
    obs = []
    for v in VARIANTS:
        if v != "base":
            d, inside = compare(drop[v], drop["base"])
            d = round(d, 12) + 0.0  # equal drops print as +0.0000, not -0.0000
            obs.append(observation(f"{v} loses more top-1 under INT8 than base", d > 0, d, inside, unit="drop"))
    d, inside = compare(drop["rep"], drop["rep_qa"])
    obs.append(observation("rep_qa loses less top-1 under INT8 than rep (QARepVGG)", d > 0, d, inside, unit="drop"))
    lines += ["", "| observation | difference of drops | here |", "|---|---|---|"] + obs
    worst = np.mean(sqnr["rep_qa"]) - np.mean(sqnr["rep"])
    lines += ["", f"rep_qa's worst layer quantizes at {np.mean(sqnr['rep_qa']):.1f} dB, rep's at "
              f"{np.mean(sqnr['rep']):.1f} dB ({worst:+.1f} dB; base: {np.mean(sqnr['base']):.1f} dB)."]
    lines += ["", "![quantization](quantization.png)"]
    return lines


def analysis_sqnr_min(row):
    from .analysis import sqnr_summary

    return sqnr_summary(row["layers"])[0]


def report(out, runs, mag, sp, rob, seconds, args, quant=None):
    variants = list(VARIANTS)
    top1 = by_variant(rob["checkpoints"], lambda r: r["top1"]["identity"], args.seeds)
    ud = by_variant(rob["checkpoints"], lambda r: r["top1"]["flip_ud"], args.seeds)
    lr = by_variant(rob["checkpoints"], lambda r: r["top1"]["flip_lr"], args.seeds)
    ratio = by_variant(mag["checkpoints"], skeleton_ratio, args.seeds)
    sk = by_variant(sp["checkpoints"], lambda r: auc(r["curves"]["skeleton"]), args.seeds)
    co = by_variant(sp["checkpoints"], lambda r: auc(r["curves"]["corner"]), args.seeds)
    lines = [
        "# Re-parameterization study on the digits (ACNet, DBB, OREPA, RepVGG-style)",
        "",
        f"`python -m acnet_ms.study --seeds {args.seeds} --epochs {args.epochs} --per_class {args.per_class}`: "
        f"`src20` at 16×16, {10 * args.per_class} training images, all {rob['checkpoints'][0]['samples']} "
        f"validation images; {len(variants)} forms × {args.seeds} seeds; {seconds / 60:.1f} min.",
        "",
        "## Top-1 (validation, unmodified images)",
        "",
        "| form | " + " | ".join(f"seed {s}" for s in range(args.seeds)) + " | mean | spread |",
        "|---|" + "---|" * (args.seeds + 2),
    ]
    for v in variants:
        lines.append(f"| {v} | " + " | ".join(f"{t:.4f}" for t in top1[v]) +
                     f" | {np.mean(top1[v]):.4f} | {spread(top1[v]):.4f} |")
    lines += ["", "## The paper's observations in this run", "",
              "A difference counts as *inside the seed-to-seed spread* when it is no larger than the range "
              "(max − min over seeds) of either side.", "",
              "| observation | difference | here |", "|---|---|---|"]
    lines += observations(top1, ud, lr, ratio, sk, co)
    lines += analysis_tables(mag, sp, rob, variants, args.seeds)
    if quant is not None:
        lines += int8_section(quant, args.seeds)
    lines += ["", "Per-checkpoint numbers: `analyses/*.json` (the `analyze.py` format); checkpoints: "
              + ", ".join(f"`{os.path.relpath(p, out)}`" for p in runs.values()) + "."]
    path = os.path.join(out, "report.md")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)
    return path


def observations(top1, ud, lr, ratio, sk, co):
    """The report's rows, one per observation of the papers: whether this run shows it, and by how much."""
    obs = []
    d, inside = compare(top1["acb"], top1["base"])
    obs.append(observation("ACB beats the plain model (paper: Table 2–4)", d > 0, d, inside))
    for v, what in (("acb_h", "both asymmetric kernels beat 1 × k only (Table 6)"),
                    ("acb_v", "both asymmetric kernels beat k × 1 only (Table 6)"),
                    ("acb_nobn", "BN in the branches helps (Table 6)"),
                    ("acb_corner", "asymmetric kernels on the skeleton beat the border (Fig. 8)")):
        d, inside = compare(top1["acb"], top1[v])
        obs.append(observation(what, d > 0, d, inside))
    for v, what in (("dbb", "DBB beats the plain model (DBB paper, ResNet-18: 69.54 → 70.99)"),
                    ("orepa", "OREPA beats the plain model (OREPA paper, ImageNet)"),
                    ("rep", "RepVGG-style branches beat the plain model (RepVGG paper's ablation)")):
        d, inside = compare(top1[v], top1["base"])
        obs.append(observation(what, d > 0, d, inside))
    d, inside = compare(top1["dbb"], top1["acb"])
    obs.append(observation("DBB beats ACB (DBB paper, ResNet-18: 70.99 against ACB's 70.53)", d > 0, d, inside))
    d, inside = compare(top1["orepa"], top1["dbb"])
    obs.append(observation("OREPA beats DBB (OREPA paper: up to +0.6 % over earlier blocks)", d > 0, d, inside))
    d, inside = compare(ud["acb"], ud["base"])
    obs.append(observation("ACB is more robust to up-down flips (Table 5)", d > 0, d, inside))
    d, inside = compare(lr["acb"], lr["base"])
    obs.append(observation("ACB is more robust to left-right flips (Table 5)", d > 0, d, inside))
    d, inside = compare(ratio["acb"], ratio["base"])
    obs.append(observation("ACB strengthens the skeleton: skeleton ÷ corner magnitude (Fig. 7)", d > 0, d, inside,
                           unit="ratio"))
    for v in ("base", "acb"):
        d, inside = compare(co[v], sk[v])
        obs.append(observation(f"{v}: zeroing skeleton entries hurts more than corners (Fig. 6; mean top-1 "
                               f"over r)", d > 0, d, inside))
    return obs


def analysis_tables(mag, sp, rob, variants, seeds):
    """The report's sections of the three kernel analyses: magnitude, sparsity, robustness."""
    lines = ["", "## Kernel magnitude (Fig. 7)", "", "![magnitude](magnitude.png)", "",
              f"Definition: {mag['definition']}; shown: the 3 × 3 matrices averaged over seeds.", "",
              "| form | skeleton ÷ corner (per seed) | centre |", "|---|---|---|"]
    for v in variants:
        rows = [r for r in mag["checkpoints"] if r["label"].startswith(v + "/")]
        lines.append(f"| {v} | " + ", ".join(f"{skeleton_ratio(r):.3f}" for r in rows) +
                     f" | {np.mean([r['sizes']['3']['centre'] for r in rows]):.3f} |")
    lines += ["", "## Sparsity (Fig. 6)", "", "![sparsity](sparsity.png)", "",
              "| form | group | " + " | ".join(f"r={r:g}" for r in sp["ratios"]) + " |",
              "|---|---|" + "---|" * len(sp["ratios"])]
    for v in variants:
        for g in sp["groups"]:
            curves = by_variant(sp["checkpoints"], lambda r, g=g: r["curves"][g]["mean"], seeds)[v]
            lines.append(f"| {v} | {g} | " + " | ".join(f"{x:.3f}" for x in np.mean(curves, axis=0)) + " |")
    lines += ["", "## Robustness (Table 5)", "", "![robustness](robustness.png)", "",
              "| form | " + " | ".join(rob["transforms"]) + " |", "|---|" + "---|" * len(rob["transforms"])]
    for v in variants:
        vals = by_variant(rob["checkpoints"], lambda r: [r["top1"][t] for t in rob["transforms"]], seeds)[v]
        lines.append(f"| {v} | " + " | ".join(f"{x:.4f}" for x in np.mean(vals, axis=0)) + " |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="study_out", help="report, figures, checkpoints (default: ./study_out)")
    parser.add_argument("--data", default=os.path.join("data", "digits"),
                        help="where the images go (default: ./data/digits)")
    parser.add_argument("--seeds", type=int, default=2, help="training seeds per form (>= 2)")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs")
    parser.add_argument("--per_class", type=int, default=40, help="training images per digit")
    parser.add_argument("--sparsity_seeds", type=int, default=2, help="random masks per sparsity ratio")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the runs of an earlier study in --out made by the same train.py command "
                             "(training is deterministic); train only the others")
    args = parser.parse_args(argv)
    if args.seeds < 2 or args.epochs < 1 or not 1 <= args.per_class <= 140:
        sys.exit("study: --seeds must be >= 2, --epochs >= 1, --per_class in 1..140")
    args.out, args.data = os.path.abspath(args.out), os.path.abspath(args.data)
    os.environ.setdefault("GLOG_v", "4")
    from . import analysis

    analysis.require_matplotlib()
    from .cli import UserError
    from .convert.quantize import runtime

    try:
        runtime()  # INT8 needs onnx and onnxruntime: say so before training
    except UserError as err:
        sys.exit(f"study: {err}")
    start = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    counts = write_digits(args.data)
    print(f"digits: {counts['train']} training and {counts['val']} validation images in {args.data}", flush=True)
    train_list = write_list(args.data, args.out, args.per_class)
    runs = {}
    for seed in range(args.seeds):
        for variant in VARIANTS:
            t = time.perf_counter()
            run_dir = os.path.join(args.out, "runs", f"{variant}-s{seed}")
            runs[f"{variant}/s{seed}"] = train_run(args.data, train_list, run_dir, variant, seed + 1, args.epochs,
                                                   args.reuse)
            print(f"trained {variant} seed {seed} in {time.perf_counter() - t:.0f} s", flush=True)
    options = ["--data_dir", args.data, "--num_parallel_workers", 2, "--batch_size", 64]
    subjects = [analysis.load_subject(path, label, [str(o) for o in options]) for label, path in runs.items()]
    folder = os.path.join(args.out, "analyses")
    mag = analysis.magnitude(subjects)
    analysis.write(mag, folder)
    sp = analysis.sparsity(subjects, ratios=RATIOS, seeds=range(args.sparsity_seeds), log=lambda *_: None)
    analysis.write(sp, folder)
    print("sparsity done", flush=True)
    rob = analysis.robustness(subjects, log=lambda *_: None)
    analysis.write(rob, folder)
    quant = analysis.quantization(subjects, calib_data=os.path.join(args.data, "train"), log=lambda *_: None)
    analysis.write(quant, folder)
    shutil.copyfile(os.path.join(folder, "quantization.png"), os.path.join(args.out, "quantization.png"))
    print("quantization done", flush=True)
    figures(args.out, mag, sp, rob, list(VARIANTS))
    path = report(args.out, runs, mag, sp, rob, time.perf_counter() - start, args, quant)
    with open(os.path.join(args.out, "study.json"), "w", encoding="utf-8") as f:
        json.dump(dict(runs=runs, seconds=time.perf_counter() - start, args=vars(args)), f, indent=1)
    print(open(path, encoding="utf-8").read())
    print(f"study: wrote {path} in {(time.perf_counter() - start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
