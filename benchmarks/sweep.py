"""Recipe sweep: every MindCV model, with one block kind, through one training step, conversion and a strict load.

    python benchmarks/sweep.py [--block_type acb] [--models resnet18,'mobilenet_v3_*'] [--limit N] [--resume]
                               [--mode 1] [--timeout 600] [--mem_gb 10] [--jsonl sweep_out/sweep.jsonl]
                               [--out docs/sweep.md]

(acnet_ms installed: `make sweep` sets that up, or `pip install -e .`; `make sweep BLOCK_TYPE=dbb` for
another kind.)

For each model of ``mindcv.list_models()``, in a process of its own (a crash,
hang or memory blow-up of one model does not end the sweep; it is killed at
``--timeout`` seconds or when its resident memory passes ``--mem_gb``;
:mod:`harness`), the stages of :mod:`sweep_step`: build the kind's form, find
the input size the stock model trains at, one training step at the recipe's
AMP level and optimizer (:mod:`recipes`), save, convert, strict load into the
stock model, compare the logits.

One JSON line per model is appended to ``--jsonl`` as soon as the model is
done (``--resume`` skips models already there; without it the selected models
run again and their new lines replace the old ones), and ``--out`` is
rewritten from all the lines after each model (:func:`sweep_report.sweep_doc`).
The kind's files default to ``docs/sweep.md`` and ``sweep_out/sweep.jsonl`` for
acb, ``docs/sweep_<kind>.md`` and ``sweep_out/sweep_<kind>.jsonl`` for the others;
``--mode 0`` (the train step in graph mode, as the recipes train) adds ``_graph`` to the names.
"""
import argparse
import difflib
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
import harness  # noqa: E402  (benchmarks/ is not a package)
import known_failures  # noqa: E402
import recipes  # noqa: E402
import report  # noqa: E402
import sweep_report  # noqa: E402

ROOT = harness.ROOT
STEP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sweep_step.py")
DEFAULT_KIND = "acb"


def default_paths(kind, mode=1):
    """``(markdown, JSON lines)`` of a kind's sweep (``mode`` 0: its graph-mode sweep), relative to the checkout."""
    stem = ("sweep" if kind == DEFAULT_KIND else f"sweep_{kind}") + ("_graph" if mode == 0 else "")
    return os.path.join("docs", f"{stem}.md"), os.path.join("sweep_out", f"{stem}.jsonl")


def run_one(name, kind, args, logdir):
    """Run the worker of ``name`` under the time and memory caps; return its record."""
    workdir = tempfile.mkdtemp(prefix=f"{name}.", dir=args.workdir)
    spec = dict(kind="sweep", model=name, block_type=kind, workdir=workdir, mode=args.mode)
    try:
        run = harness.run(STEP, spec, cap_mb=args.mem_gb * 1024 if args.mem_gb > 0 else None,
                          timeout=args.timeout, log_path=os.path.join(logdir, f"{name}.log"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rec = run.result or dict(model=name, block_type=kind, status="running", stage="start", errors={})
    if rec.get("status") == "running":  # the worker did not finish its stage
        stopped = run.stopped or f"crashed (exit status {run.returncode}): {run.last_line}"
        rec["errors"][rec.get("stage", "start")] = stopped
        rec["status"] = "killed" if stopped.startswith("killed") else "crashed"
    rec.pop("process_cpu_s", None)
    rec["seconds"] = round(run.seconds, 1)
    rec["peak_rss_mb"] = round(run.peak_mb)
    rec["when"] = time.strftime("%Y-%m-%d %H:%M")
    return rec


def select(patterns, names, limit=0):
    """The models ``--models`` names (comma-separated names or glob patterns), in list order; the first
    ``limit`` of them if ``limit`` > 0.  ValueError for a pattern that matches none."""
    chosen = set(names) if not patterns else set()
    for pattern in (p.strip() for p in patterns.split(",") if p.strip()):
        hits = fnmatch.filter(names, pattern)
        if not hits:
            close = difflib.get_close_matches(pattern, names, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"--models: {pattern!r} matches no MindCV model{hint}")
        chosen.update(hits)
    picked = [n for n in names if n in chosen]
    return picked[:limit] if limit > 0 else picked


#: record fields written before the sweep took any kind: old name -> new name (and the old status)
LEGACY = {"acbs": "blocks", "converted_acbs": "converted_blocks"}


def read_jsonl(path, kind):
    """model -> its latest record of block kind ``kind`` (records without a kind are ACB's)."""
    records = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line cut short by an interrupted write
                for old, new in LEGACY.items():
                    if old in rec:
                        rec[new] = rec.pop(old)
                if rec.get("status") == "no_acb":
                    rec["status"] = "no_block"
                if rec.setdefault("block_type", DEFAULT_KIND) == kind:
                    records[rec["model"]] = rec
    return records


def code_state():
    """The commit the sweep runs, and whether the package has uncommitted changes (results depend on them)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        sha = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "acnet_ms")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha} + uncommitted changes to acnet_ms" if dirty else sha


def doc_setup(kind, label, family_of, jsonl, mode=1):
    """What :func:`sweep_report.sweep_doc` needs besides the records."""
    extra = ("" if kind == DEFAULT_KIND else f" --block_type {kind}") + (" --mode 0" if mode == 0 else "")
    make = ("" if kind == DEFAULT_KIND else f" BLOCK_TYPE={kind}") + (" MODE=0" if mode == 0 else "")
    return dict(kind=kind, label=label, command=f"make sweep{make}", mode=mode,
                script_args=extra, jsonl=jsonl, versions=harness.versions(), family_of=family_of,
                why=known_failures.SWEEP.get(kind, {}), sizes=recipes.SIZES, batch=recipes.BATCH, lr=recipes.LR,
                tol=recipes.TOL, rounding_factor=recipes.ROUNDING_FACTOR,
                recipes=(recipes.RECIPES_SOURCE, recipes.DEFAULT_RECIPE, recipes.FAMILY_RECIPES, recipes.MODEL_RECIPES))


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--block_type", default=DEFAULT_KIND, help="the block kind (default acb)")
    parser.add_argument("--models", default="", help="comma-separated names or glob patterns (default: all)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N selected models (0: all)")
    parser.add_argument("--out", default=None, help="markdown report (default: the kind's, see above)")
    parser.add_argument("--jsonl", default=None, help="one JSON line per model, appended as each finishes")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per model before it is killed")
    parser.add_argument("--mem_gb", type=float, default=10,
                        help="kill a model whose resident memory passes this many GB (0: no cap)")
    parser.add_argument("--mode", type=int, choices=(0, 1), default=1,
                        help="the train step's mode: 1 PyNative (default), 0 graph (files named *_graph)")
    parser.add_argument("--resume", action="store_true", help="skip the models already in --jsonl")
    args = parser.parse_args(argv)
    os.environ.setdefault("GLOG_v", "3")
    from acnet_ms import kinds

    try:
        args.kind = kinds.get_kind(args.block_type)
    except ValueError as err:
        parser.exit(2, f"error: --block_type: {err}\n")
    md_path, jsonl_path = default_paths(args.kind.name, args.mode)
    args.jsonl_default = jsonl_path
    args.out = args.out or os.path.join(ROOT, md_path)
    args.jsonl = os.path.abspath(args.jsonl or os.path.join(ROOT, jsonl_path))
    return args


def main(argv=None):
    args = parse(argv)
    kind = args.kind.name
    family_of = recipes.families()
    all_models = sorted(family_of)
    try:
        names = select(args.models, all_models, args.limit)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(args.jsonl), exist_ok=True)
    args.workdir = os.path.join(os.path.dirname(args.jsonl), "work")
    logdir = os.path.join(os.path.dirname(args.jsonl), f"logs_{kind}")
    os.makedirs(args.workdir, exist_ok=True)
    os.makedirs(logdir, exist_ok=True)
    records = read_jsonl(args.jsonl, kind)
    todo = [n for n in names if not (args.resume and n in records)]
    setup = doc_setup(kind, args.kind.label, family_of, args.jsonl_default, args.mode)
    code = code_state()
    print(f"{kind}: {len(todo)} of {len(names)} selected models to run ({len(names) - len(todo)} already in "
          f"{args.jsonl}); timeout {args.timeout:g} s, memory cap {args.mem_gb:g} GB", flush=True)
    start = time.perf_counter()
    try:
        for i, name in enumerate(todo, 1):
            rec = run_one(name, kind, args, logdir)
            rec["code"] = code
            with open(args.jsonl, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
            records[name] = rec
            report.write_atomic(args.out, sweep_report.sweep_doc(records, all_models, setup))
            print(progress(i, len(todo), rec, args.kind.label, time.perf_counter() - start), flush=True)
    except KeyboardInterrupt:
        print("interrupted: continue with --resume", flush=True)
        return 130
    report.write_atomic(args.out, sweep_report.sweep_doc(records, all_models, setup))
    print(f"wrote {args.out} and {args.jsonl}")
    return 0


def progress(i, n, rec, label, elapsed):
    """``[3/275] resnet18: ok; 41 s, 1.2 GB; eta 90 min``."""
    stages = sweep_report.SWEEP_STAGES + ("start",)
    first = next((f"{sweep_report.stage_text(s, label)}: {rec['errors'][s]}" for s in stages if s in rec["errors"]), "")
    shown = {"no_block": f"no {label}", "stock_fails": "stock model fails"}.get(rec["status"], rec["status"])
    return (f"[{i}/{n}] {rec['model']}: {shown}{' (' + first[:160] + ')' if first else ''}; "
            f"{rec['seconds']:.0f} s, {rec['peak_rss_mb'] / 1024:.1f} GB; eta {(elapsed / i * (n - i)) / 60:.0f} min")


if __name__ == "__main__":
    sys.exit(main())
