"""The README's first command: train, validate, fold and re-validate an ACB model on real data.

The data are the 1,797 handwritten digits that scikit-learn ships (8 x 8
grey images, 10 classes), written once as an ImageFolder tree
(``data/digits/{train,val}/<digit>/*.png``, 80/20 stratified split).  Every
step runs the package's own programs (:mod:`acnet_ms.apps`: train, validate,
convert) in a process of its own, as a user would; the recipe is the
package's ``configs/demo_digits.yaml``.  Outputs go under the current folder
unless told otherwise, so the demo runs from an installed package too.

    python -m acnet_ms.demo [--workdir DIR] [--data DIR] [--epochs N]
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np

from .cli import quiet_mindspore
from ._moved import moved_attr as _moved_attr

quiet_mindspore()  # before MindSpore is imported (the training package imports it): its logs stay critical

from .training.setup import clear_run  # noqa: E402

#: the folder that holds this acnet_ms package: the programs run in the demo's processes import it from there
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: the demo's recipe, shipped in the package
DEMO_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "demo_digits.yaml")


def program(name):
    """The command line that runs the package's program ``name`` (``train``, ...): ``[python, -m, ...]``."""
    return [sys.executable, "-m", f"acnet_ms.apps.{name}"]


def program_env():
    """The environment of a program's process: this package first on its path, whichever folder it runs in."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (PACKAGE_PARENT, env.get("PYTHONPATH"))))
    return env


def write_digits(root, val_fraction=0.2, seed=0):
    """Write scikit-learn's digits as PNG files under root/{train,val}/<digit>/; returns the counts."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    rng = np.random.default_rng(seed)
    counts = {"train": 0, "val": 0}
    done = os.path.join(root, ".complete")
    if os.path.exists(done):
        for split in counts:
            counts[split] = sum(len(files) for _, _, files in os.walk(os.path.join(root, split)))
        return counts
    for label in range(10):
        index = np.flatnonzero(digits.target == label)
        rng.shuffle(index)
        n_val = int(round(len(index) * val_fraction))
        for j, i in enumerate(index):
            split = "val" if j < n_val else "train"
            folder = os.path.join(root, split, str(label))
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(images[i]).convert("RGB").save(os.path.join(folder, f"{i:04d}.png"))
            counts[split] += 1
    open(done, "w").close()
    return counts


def step(title, name, *args):
    """Run one program (``train``, ...); stop the demo with its error if it fails. Returns (stdout, seconds)."""
    print(f"\n== {title}: python {name}.py {' '.join(map(str, args))}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(program(name) + [str(a) for a in args], env=program_env(), stdout=subprocess.PIPE,
                          text=True)
    seconds = time.perf_counter() - start
    print(proc.stdout, end="", flush=True)
    if proc.returncode != 0:
        sys.exit(f"demo: {name}.py failed (exit {proc.returncode})")
    return proc.stdout, seconds


def last_line_metrics(text):
    line = text.strip().splitlines()[-1]
    return dict(part.split("=") for part in line.split())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="demo_out", help="checkpoints and outputs (default: ./demo_out)")
    parser.add_argument("--data", default=os.path.join("data", "digits"),
                        help="where the images go (default: ./data/digits)")
    parser.add_argument("--epochs", type=int, default=None, help="override the demo config's epoch_size")
    args = parser.parse_args(argv)
    args.workdir, args.data = os.path.abspath(args.workdir), os.path.abspath(args.data)
    start = time.perf_counter()
    counts = write_digits(args.data)
    print(f"digits: {counts['train']} training and {counts['val']} validation images in {args.data}")
    config = DEMO_CONFIG
    extra = ["--epoch_size", args.epochs] if args.epochs else []
    clear_run(args.workdir)  # the demo's own folder: a second make demo starts afresh
    _, t_train = step("train", "train", "--config", config, "--data_dir", args.data,
                      "--ckpt_save_dir", args.workdir, *extra)
    trained = os.path.join(args.workdir, "src20_acb-best.ckpt")
    folded = os.path.join(args.workdir, "src20_deploy.ckpt")
    out, t_val = step("validate the ACB checkpoint", "validate", "--ckpt_path", trained)
    before = last_line_metrics(out)
    _, t_conv = step("fold it into a plain src20", "convert", "--ckpt_path", trained, "--output", folded)
    out, t_val2 = step("validate the plain checkpoint", "validate", "--ckpt_path", folded)
    after = last_line_metrics(out)
    size = lambda p: f"{os.path.getsize(p) / 1e6:.2f} MB"  # noqa: E731
    rows = [
        ("ACB training form", trained, size(trained), before["top1"], before["top5"], f"{t_val:.1f}"),
        ("folded plain src20", folded, size(folded), after["top1"], after["top5"], f"{t_val2:.1f}"),
    ]
    print("\n| checkpoint | file | size | top-1 | top-5 | validate s |\n|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\ntraining {t_train:.1f} s, conversion {t_conv:.1f} s, whole demo {time.perf_counter() - start:.1f} s")
    if before["top1"] != after["top1"]:
        sys.exit("demo: top-1 changed by folding")
    return 0


# the names this module had before the package was laid out by role (acnet_ms/_moved.py)
__getattr__ = _moved_attr("acnet_ms.demo")


if __name__ == "__main__":
    sys.exit(main())
