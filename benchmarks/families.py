"""The table of MindCV families for every block kind: k x k convs, which became blocks (folding where),
which stayed plain and why; and each member taken through one conversion into stock MindCV.

    python benchmarks/families.py [--kinds acb,dbb,orepa,rep] [--members resnet18,...] [--no_convert]
                                  [--mem_gb 8] [--timeout 900] [--out docs/families.md]

(acnet_ms installed: `make install`, or `pip install -e .`.)

For one small member of every MindCV CNN family, in a process of its own per
member (killed past ``--mem_gb`` of resident memory or after ``--timeout``
seconds), and for each kind: build the kind's form through the same factory as
every entry point (``acnet_ms.create_model(name, block_type=kind)``) and read its
``block_summary`` (the table row); then (unless ``--no_convert``) randomise its
BN statistics, save it, convert the file with ``acnet_ms.convert.pipeline.convert_checkpoint``,
strict-load the result into the stock ``mindcv.create_model(name)`` and compare
the logits in eval mode. A member whose stock model does not run a forward pass
as shipped is listed with the error.
"""
import argparse
import json
import os
import sys
import time

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
import harness  # noqa: E402  (benchmarks/ is not a package)
import known_failures  # noqa: E402
import report  # noqa: E402

#: family -> one small member (docs/families.md's table), plus ReXNet, whose stock model does not run in MindSpore 2.8
FAMILIES = {
    "ResNet": "resnet18", "ResNeXt": "resnext50_32x4d", "SE-ResNet": "seresnet18", "Res2Net": "res2net50",
    "ResNeSt": "resnest14", "RegNet": "regnet_x_200mf", "MobileNet v1": "mobilenet_v1_025",
    "MobileNet v2": "mobilenet_v2_035_96", "MobileNet v3": "mobilenet_v3_small_075", "MnasNet": "mnasnet_050",
    "EfficientNet": "efficientnet_b0", "GhostNet": "ghostnet_050", "ShuffleNet v1": "shufflenet_v1_g3_05",
    "ShuffleNet v2": "shufflenet_v2_x0_5", "GoogLeNet": "googlenet", "Inception v3": "inception_v3",
    "Xception": "xception", "DenseNet": "densenet121", "DPN": "dpn92", "VGG": "vgg11",
    "SqueezeNet": "squeezenet1_1", "HRNet": "hrnet_w32", "SK-ResNet": "skresnet18", "ReXNet": "rexnet_09",
}
#: the input a member runs at where 64 px is too small for its head (VGG's classifier: 7 x 7 features;
#: Inception v3's auxiliary head; Xception's stem)
SIZES = {"inception_v3": 299, "vgg11": 224, "xception": 71}
NUM_CLASSES = 10
TOL = 1e-4  # logits: max |stock - block model| over max(1, largest |logit|), as the tests' assert_close


# ---------------------------------------------------------------- one member, one kind (worker side)

def family_row(name, kind, options=None):
    """The table row of member ``name`` built with ``kind``: ``{"convs": k x k convs (k > 1), "blocks": how
    many became blocks, "slots": {where the fold goes: count}, "plain": {reason: count}}``, and the
    network (for :func:`check_conversion`)."""
    from acnet_ms import block_summary, create_model

    net = create_model(name, num_classes=NUM_CLASSES, block_type=kind, block_options=options)
    summary = block_summary(net)
    plain = {}
    for reason in summary["plain"].values():
        plain[reason] = plain.get(reason, 0) + 1
    row = dict(convs=summary["blocks"] + len(summary["plain"]), blocks=summary["blocks"],
               slots=dict(summary["kinds"]), plain=plain)
    return row, net


def randomise(net, seed=2):
    """Random BN statistics and affine parameters everywhere (gamma, beta, moving mean and variance), each
    block's BNs then scaled by 1 / their number (the sum of its branches keeps one branch's gain, as a
    trained network's does), and every constant-initialised block parameter (a branch's scale, ...) made
    non-constant, so that every branch of every block counts in the comparison."""
    import numpy as np
    from mindspore import Tensor, nn

    from acnet_ms.reparam.switch import reparam_blocks

    rng = np.random.default_rng(seed)

    def put(param, values):
        param.set_data(Tensor(np.asarray(values, np.float32).reshape(param.shape)))

    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.BatchNorm2d):
            n = cell.gamma.shape[0]
            put(cell.gamma, rng.uniform(0.5, 1.5, n))
            put(cell.beta, rng.normal(0.0, 0.2, n))
            put(cell.moving_mean, rng.normal(0.0, 0.2, n))
            put(cell.moving_variance, rng.uniform(0.5, 2.0, n))
    for _, block in reparam_blocks(net):
        bns = [b for _, b in block.cells_and_names() if isinstance(b, nn.BatchNorm2d)]
        for bn in bns:
            put(bn.gamma, bn.gamma.asnumpy() / len(bns))
            put(bn.beta, bn.beta.asnumpy() / len(bns))
        for local, param in block.parameters_and_names():
            values = param.asnumpy()
            if values.size > 1 and np.ptp(values) == 0 and not local.endswith(("moving_mean", "moving_variance")):
                put(param, rng.uniform(0.05, 0.3, values.shape))
    return net


def check_conversion(name, kind, net, stock, workdir, note):
    """Member ``name``'s ``kind`` form ``net`` (randomised) saved, converted by ``convert_checkpoint``,
    strict-loaded into ``stock`` and compared in eval mode; ``note(stage)`` is called as each stage starts.
    Returns ``{"rel_err": ...}``; raises on a failure (the stage in flight is the last noted)."""
    import mindspore as ms
    import numpy as np

    from acnet_ms.io.checkpoint import read_checkpoint, write_checkpoint
    from acnet_ms.convert.pipeline import convert_checkpoint

    note("save")
    randomise(net)
    src, dst = os.path.join(workdir, f"{kind}.ckpt"), os.path.join(workdir, f"{kind}.plain.ckpt")
    write_checkpoint(src, {p.name: p.asnumpy() for p in net.get_parameters()},
                     dict(model=name, block_type=kind, block_options=net.acnet.block_options,
                          num_classes=NUM_CLASSES))
    note("convert")
    summary = convert_checkpoint(src, dst, overwrite=True, log=lambda *_: None)
    if summary["blocks"] != len(net.acnet.blocks):
        raise AssertionError(f"folded {summary['blocks']} blocks, the model has {len(net.acnet.blocks)}")
    note("load")
    arrays, _ = read_checkpoint(dst)
    params = {k: ms.Parameter(ms.Tensor(v), name=k) for k, v in arrays.items()}
    not_loaded, unused = ms.load_param_into_net(stock, params, strict_load=True)
    if not_loaded or unused:
        raise AssertionError(f"{len(not_loaded)} parameters missing ({', '.join(not_loaded[:2]) or '-'}), "
                             f"{len(unused)} unused ({', '.join(unused[:2]) or '-'})")
    note("logits")
    size = SIZES.get(name, 64)
    x = ms.Tensor(np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32))
    net.set_train(False)
    stock.set_train(False)
    expected = net(x).asnumpy().astype(np.float64)
    got = stock(x).asnumpy().astype(np.float64)
    scale = np.abs(expected).max()
    if not np.isfinite(expected).all() or scale == 0:
        raise FloatingPointError(f"the block model's logits are not usable (max |logit| {scale:.3g})")
    rel = float(np.abs(got - expected).max() / max(1.0, scale))
    if not rel <= TOL:
        raise AssertionError(f"max relative error of the logits {rel:.2e} > {TOL:.0e}")
    return dict(rel_err=rel)


def stock_error(name):
    """``(stock model, None)`` if stock MindCV's model builds and runs one eval-mode forward pass (PyNative)
    at the member's input size, else ``(None, the error's first line)``."""
    import mindcv
    import mindspore as ms
    import numpy as np

    size = SIZES.get(name, 64)
    try:
        stock = mindcv.create_model(name, num_classes=NUM_CLASSES)
        stock.set_train(False)
        stock(ms.Tensor(np.zeros((1, 3, size, size), np.float32)))
    except Exception as err:  # noqa: BLE001  (any failure of the stock model is what we report)
        return None, error_text(err)
    return stock, None


def error_text(err, limit=240):
    """``Type: message`` on one line: MindSpore's message up to its call stack, without its advice."""
    text = " ".join(str(err).split("----")[0].split())
    return f"{type(err).__name__}: {text.split(' Maybe ')[0]}"[:limit]


def work_member(spec, result_path):
    """Every kind of ``spec["kinds"]`` on member ``spec["model"]``: its row and (``spec["convert"]``) its
    conversion; the result is rewritten after each stage, so a killed worker leaves the kind and stage."""
    ms = harness.quiet_mindspore("pynative")
    ms.set_seed(1)
    name = spec["model"]
    res = dict(model=name, kinds={}, current=None, stage="stock")
    harness.write_result(result_path, res)
    stock, res["stock_error"] = stock_error(name)
    if stock is None:
        return res
    for kind in spec["kinds"]:
        out = res["kinds"][kind] = {}
        start = time.process_time()

        def note(stage, kind=kind):
            res.update(current=kind, stage=stage)
            harness.write_result(result_path, res)

        note("build")
        try:
            out["row"], net = family_row(name, kind)
            if spec.get("convert"):
                out["convert"] = check_conversion(name, kind, net, stock, spec["workdir"], note)
        except Exception as err:  # noqa: BLE001  (recorded with its stage)
            out["error"] = dict(stage=res["stage"], text=error_text(err, 300))
        out["cpu_s"] = round(time.process_time() - start, 1)
        net = None
        harness.release()
        note("done")
    res["current"] = None
    return res


WORKERS = {"member": work_member}


def read_jsonl(path):
    """The records of a JSON-lines file, in order (a line cut short by an interrupted write is skipped)."""
    records = []
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
    return records


def intro(records, kinds):
    """The document's opening: what was run, on what, how long it took."""
    cpu = sum(rec.get("process_cpu_s", 0) for rec in records.values())
    wall = sum(rec.get("seconds", 0) for rec in records.values())
    versions = harness.versions()
    return (f"One small member of each MindCV CNN family ({len(records)} members), built with each block kind "
            f"({', '.join(kinds)}) through `acnet_ms.create_model(name, num_classes={NUM_CLASSES}, "
            "block_type=kind)` with the kind's default options. A row: the member's k x k convs (k > 1), how "
            "many became blocks and where each block's fold goes (`block_summary`), and the convs that stayed "
            "plain with the kind's reason. "
            f"Run: {wall / 60:.0f} min of wall time, one process per member, {cpu / 60:.0f} min of CPU in the "
            f"members' processes ({versions}). Again: `make families` "
            "(`python benchmarks/families.py --out docs/families.md`; `--members`, `--kinds`, `--no_convert`, "
            f"`--resume`).{harness.mindcv_note(versions)}")


# ---------------------------------------------------------------- the driver

def run_member(name, kinds, convert, mem_gb, timeout, workdir):
    """Run member ``name``'s worker; its record, with what stopped it attributed to the kind in flight."""
    os.makedirs(workdir, exist_ok=True)
    spec = dict(kind="member", model=name, kinds=kinds, convert=convert, workdir=workdir)
    run = harness.run(__file__, spec, cap_mb=mem_gb * 1024 if mem_gb else None, timeout=timeout)
    rec = run.result or dict(model=name, kinds={}, current=None, stage="start", stock_error=None)
    if run.stopped and rec.get("current"):
        rec["kinds"].setdefault(rec["current"], {})["error"] = dict(stage=rec["stage"], text=run.stopped)
    elif run.stopped and not rec["kinds"] and not rec.get("stock_error"):
        rec["worker_error"] = run.stopped
    rec.update(seconds=round(run.seconds, 1), peak_mb=round(run.peak_mb))
    return rec


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default="", help="comma-separated kinds (default: every registered kind)")
    parser.add_argument("--members", default="", help="comma-separated member names (default: every family's)")
    parser.add_argument("--no_convert", action="store_true", help="the tables only, no conversion check")
    parser.add_argument("--mem_gb", type=float, default=8, help="kill a member's process past this many GB")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per member before it is killed")
    parser.add_argument("--out", help="write the tables to this markdown file")
    parser.add_argument("--jsonl", default=os.path.join(harness.ROOT, "sweep_out", "families.jsonl"),
                        help="one JSON line per member, appended as each finishes (the document is written "
                             "from every line: a later line of a member replaces an earlier one)")
    parser.add_argument("--resume", action="store_true", help="skip the members already in --jsonl")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        harness.worker_main(WORKERS, args.worker, args.result)
    from acnet_ms import kinds as table

    try:
        kinds = [table.get_kind(k).name for k in args.kinds.split(",") if k.strip()] or table.kind_names()
    except ValueError as err:
        parser.exit(2, f"error: --kinds: {err}\n")
    chosen = [m.strip() for m in args.members.split(",") if m.strip()]
    unknown = sorted(set(chosen) - set(FAMILIES.values()))
    if unknown:
        parser.exit(2, f"error: --members: {unknown[0]} is not a family's member ({', '.join(FAMILIES.values())})\n")
    jsonl = os.path.abspath(args.jsonl)
    os.makedirs(os.path.dirname(jsonl), exist_ok=True)
    done = {rec["model"]: rec for rec in read_jsonl(jsonl)}
    work = os.path.join(os.path.dirname(jsonl), "families_work")
    for family, name in FAMILIES.items():
        if (chosen and name not in chosen) or (args.resume and name in done):
            continue
        rec = done[name] = run_member(name, kinds, not args.no_convert, args.mem_gb, args.timeout, work)
        with open(jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        print(report.member_line(family, rec), flush=True)
    records = {family: done[name] for family, name in FAMILIES.items() if name in done}
    labels = {k: table.get_kind(k).label for k in kinds}
    text = report.families_doc(records, kinds, labels, convert=not args.no_convert, tol=TOL,
                               why=known_failures.FAMILIES, intro=intro(records, kinds))
    print(text)
    if args.out:
        report.write_atomic(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
