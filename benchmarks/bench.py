"""Benchmarks: inference, training step, conversion and input pipeline, side by side.

    python benchmarks/bench.py [--quick] [--only SECTION] [--out benchmarks/results.md]

(acnet_ms installed: `make bench` sets that up, or `pip install -e .`.)

Each measurement runs in its own process (so its peak memory is its own;
:mod:`harness`) and returns JSON (the workers of :mod:`workloads`); this driver
collects them and prints markdown tables (:mod:`report`).  Every figure is the
median over repeated runs with [min-max]; every ratio is computed from medians
taken in this same run.  CPU, graph mode.
"""
import argparse
import os
import platform
import sys
import tempfile
import time

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
import harness  # noqa: E402  (benchmarks/ is not a package)
import report  # noqa: E402

WORKLOADS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "workloads.py")
BOOKKEEPING = ("peak_rss_mb", "process_cpu_s")  # what the harness adds to every result


def measure(spec):
    """The result of one worker (``spec["kind"]`` names it); SystemExit with its output if it fails."""
    run = harness.run(WORKLOADS, spec, poll=0.5)
    if not run.ok:
        raise SystemExit(f"benchmark worker {spec} failed ({run.stopped}):\n{run.log_tail}")
    return {k: v for k, v in run.result.items() if k not in BOOKKEEPING}


def peak_of(spec, cap_mb=None):
    """Peak RSS (MB) of one worker's process; ``None`` if it was stopped at ``cap_mb``."""
    run = harness.run(WORKLOADS, spec, cap_mb=cap_mb, poll=0.5)
    if run.stopped and run.stopped.startswith("killed"):
        return None
    if not run.ok:
        raise SystemExit(f"benchmark worker {spec} failed ({run.stopped}):\n{run.log_tail}")
    return run.result["peak_rss_mb"]


# ---------------------------------------------------------------- the sections: measure, then format

def inference_section(quick):
    results = {model: measure(dict(kind="infer", model=model, variants=report.INFER_FORMS,
                                   repeat_latency=8 if quick else 60, repeat_throughput=2 if quick else 8))
               for model in ("sres18", "sres50", "skresnet18")}
    return report.inference_section(results)


def families_section(quick):
    results = {model: measure(dict(kind="infer", model=model, variants=["folded", "deploy", "mindcv"],
                                   repeat_latency=8 if quick else 40, repeat_throughput=1 if quick else 3))
               for model in ("mobilenet_v2_100", "regnet_x_400mf", "efficientnet_b0", "densenet121", "ghostnet_100")}
    return report.folded_families_section(results)


def train_section(quick, batch):
    plan = {"sres18": ["folded", "acb", "acb_onebn"], "skresnet18": ["folded", "acb", "mindcv"],
            "mobilenet_v2_100": ["folded", "acb"], "regnet_x_400mf": ["folded", "acb"]}
    times, peaks = {}, {}
    for model, variants in plan.items():
        times[model] = measure(dict(kind="train", model=model, variants=variants, batch=batch,
                                    repeat=3 if quick else 10))
        peaks[model] = {v: peak_of(dict(kind="train_memory", model=model, variant=v, batch=batch)) for v in variants}
    return report.train_section(batch, times, peaks)


def memory_section(cap_gb=20):
    """Peak memory of graph compilation plus one training step, ACB / base, for a small and a large graph
    (HRNet: 272 ACBs), and of one PyNative step."""
    peaks = {model: {mode: {v: peak_of(dict(kind="step_memory", model=model, variant=v, mode=mode), cap_gb * 1024)
                            for v in ("base", "acb", "acb_onebn")}
                     for mode in ("graph", "pynative")}
             for model in ("sres18", "hrnet_w32")}
    return report.memory_section(cap_gb, peaks)


def onnx_section(quick, tmp):
    return report.onnx_section(measure(dict(kind="onnx", model="sres18", dir=tmp, repeat=10 if quick else 60)))


def int8_section(quick, tmp):
    results = []
    for model in ("sres18", "mobilenet_v2_100"):
        for batch in (1, 16):
            res = measure(dict(kind="int8", model=model, batch=batch, dir=tmp,
                               repeat=(6 if quick else 30) if batch == 1 else (3 if quick else 12)))
            results.append(dict(model=model, batch=batch, **res))
    return report.int8_section(results)


def acb_layer_section(quick):
    return report.acb_layer_section(measure(dict(kind="acb_layer", channels=64, repeat=5 if quick else 25)))


def convert_section(quick, tmp):
    results = []
    for model in ("sres50", "resnext50_32x4d", "sknet50"):
        src = os.path.join(tmp, f"{model}_acb.ckpt")
        made = measure(dict(kind="make_ckpt", model=model, path=src))
        walls, rss = [], []
        for i in range(2 if quick else 3):
            out = os.path.join(tmp, f"{model}_deploy{i}.ckpt")
            wall, peak = harness.run_timed_command([sys.executable, "convert.py", "--ckpt_path", src, "--output", out])
            walls.append(wall)
            rss.append(peak)
        results.append(dict(model=model, bytes=made["bytes"], walls=walls, rss=rss))
    return report.convert_section(results)


def pipeline_section(quick, tmp):
    results = [dict(workers=workers, **measure(dict(kind="pipeline", dir=os.path.join(tmp, f"jpeg{workers}"),
                                                    workers=workers, epochs=2 if quick else 4)))
               for workers in (1, 2)]
    return report.pipeline_section(results)


def kinds_section(quick, batch=8, size=224):
    """Every registered kind on sres18 and mobilenet_v2_100: training step / base next to the forward
    multiply-add ratio (the step's FLOP floor), and folded / stock latency."""
    from acnet_ms import kinds

    from workloads import REPOPT_ROWS

    names = kinds.kind_names()
    train, folded = {}, {}
    for model in ("sres18", "mobilenet_v2_100"):
        train[model] = measure(dict(kind="kinds_train", model=model, kinds=["base"] + names + list(REPOPT_ROWS),
                                    batch=batch, size=size, repeat=3 if quick else 8))
        folded[model] = measure(dict(kind="kinds_folded", model=model, kinds=names, repeat=8 if quick else 40))
    return report.kinds_section(batch, size, names, train, folded)


SECTIONS = ("infer", "families", "train", "memory", "onnx", "int8", "acb_layer", "convert", "pipeline", "kinds")


def section(name, args, tmp):
    """The markdown of section ``name``, measured now."""
    return {"infer": lambda: inference_section(args.quick),
            "families": lambda: families_section(args.quick),
            "train": lambda: train_section(args.quick, args.train_batch),
            "memory": lambda: memory_section(),
            "onnx": lambda: onnx_section(args.quick, tmp),
            "int8": lambda: int8_section(args.quick, tmp),
            "acb_layer": lambda: acb_layer_section(args.quick),
            "convert": lambda: convert_section(args.quick, tmp),
            "pipeline": lambda: pipeline_section(args.quick, tmp),
            "kinds": lambda: kinds_section(args.quick)}[name]()


def machine():
    import importlib.metadata as md

    return (f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2 ** 30:.0f} GiB, Python "
            f"{platform.python_version()}, MindSpore {md.version('mindspore')}, MindCV {md.version('mindcv')}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--train_batch", type=int, default=16, help="batch of the training-step benchmark")
    parser.add_argument("--only", choices=SECTIONS,
                        help="one section (with --out: replaces that section in the file, keeping the others)")
    parser.add_argument("--out", default=None, help="also write the tables to this markdown file")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    parts = [f"Measured {time.strftime('%Y-%m-%d')} on {machine()}; graph mode.\n"
             f"Command: `python benchmarks/bench.py{' --quick' if args.quick else ''}`"
             f"{'' if args.train_batch == 16 else f' --train_batch {args.train_batch}'}."]
    with tempfile.TemporaryDirectory() as tmp:
        for name in SECTIONS:
            if args.only in (None, name):
                parts.append(section(name, args, tmp))
                print(parts[-1] + "\n", flush=True)
    text = "\n\n".join(parts) + f"\n\n(benchmark run took {time.perf_counter() - start:.0f} s)\n"
    if args.out and args.only and os.path.exists(args.out):
        with open(args.out, encoding="utf-8") as f:
            text = report.merge_section(f.read(), parts[-1], parts[0])
    if args.out:
        report.write_atomic(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
