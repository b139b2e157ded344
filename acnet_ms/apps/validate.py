"""Validate a checkpoint: top-1, top-5, loss and sample count on a split.

    python validate.py --ckpt_path CKPT --data_dir /path/to/data [--deploy] [--json out.json]
    python validate.py --ckpt_path MODEL.onnx --data_dir /path/to/data [--json out.json]

The model, its block type, classes and data recipe are read from the
checkpoint; options given here (or in --config) override them.  A checkpoint
without that record (e.g. one written by MindCV) takes num_classes from its
classifier entries (dense or conv) and needs --model.  A checkpoint written by convert.py
--fold_bn (meta "deploy": true) is evaluated in the fully folded model (convs
with bias, no BN).  --deploy folds a training checkpoint's blocks on loading;
for MindCV's RepVGG that is its single-branch deploy form.

An .onnx file (FP32 or INT8, e.g. convert.py --export onnx [--int8]) is run in
onnxruntime on the same data path, a .mindir file (convert.py --export mindir) in MindSpore; its data options are those recorded in the
checkpoint beside it (x.onnx or x.int8.onnx -> x.ckpt) if there is one, its
input size and classes the graph's.
"""
import json
import os

from ..cli import ArgumentParser, UserError, quiet_mindspore, run
from ..kinds.table import load_kinds


def extra(parser):
    parser.add_argument("--deploy", action="store_true",
                        help="fold the re-parameterizable blocks in memory before evaluating (MindCV's RepVGG: "
                             "its single-branch deploy form)")
    parser.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    parser.add_argument("--any_class_names", action="store_true",
                        help="score even if the data's class folders differ from those the checkpoint records")


def main(argv=None):
    quiet_mindspore()  # before anything imports MindSpore (a block-kind module may)
    load_kinds()  # a block-kind module that does not import: one line, whatever the arguments
    from ..config import loader as config

    pre = ArgumentParser(add_help=False)
    pre.add_argument("--ckpt_path")
    pre.add_argument("-h", "--help", action="store_true")
    known, _ = pre.parse_known_args(argv)
    if known.help:  # the whole parser prints every option and exits; no checkpoint needed
        config.parse(argv, __doc__, extra=extra)
    quiet_mindspore()
    from ..io.checkpoint import read_checkpoint
    from ..engine.evaluation import recorded_options, validate
    from ..models import num_classes_of
    from ..models.registry import model_hint
    from ..reparam.state import network_entries

    if not known.ckpt_path:
        raise UserError("--ckpt_path is required")
    if known.ckpt_path.lower().endswith((".onnx", ".mindir")):
        from ..convert.quantize import graph_options, score_graph

        cfg, args = config.parse(argv, __doc__, extra=extra, base=graph_options(known.ckpt_path))
        if args.deploy:
            raise UserError(f"{known.ckpt_path}: --deploy folds a checkpoint's ACBs; a graph has none")
        return report(score_graph(cfg, known.ckpt_path), known.ckpt_path, args)
    arrays, meta = read_checkpoint(known.ckpt_path)
    base = dict(dict(model=None, num_classes=None), **recorded_options(meta, known.ckpt_path))
    cfg, args = config.parse(argv, __doc__, extra=extra, base=base)
    if not cfg["model"]:
        raise UserError(f"{known.ckpt_path}: the checkpoint does not record its model; pass --model NAME "
                        f"({model_hint(known.ckpt_path)})")
    if cfg["num_classes"] is None:
        cfg["num_classes"] = num_classes_of(cfg["model"], network_entries(arrays))
        if cfg["num_classes"] is None:
            raise UserError(f"{known.ckpt_path}: no classifier entry of {cfg['model']} found to read the class "
                            f"count from; pass --num_classes N")
    cfg["any_class_names"] = args.any_class_names
    metrics = validate(cfg, arrays, deploy=args.deploy, folded_bn=bool(meta.get("deploy")), meta=meta)
    return report(metrics, known.ckpt_path, args)


def report(metrics, path, args):
    """Print the metrics line (and write --json)."""
    line = (f"top1={metrics['top1']:.4f} top5={metrics['top5']:.4f} loss={metrics['loss']:.4f} "
            f"samples={metrics['samples']}")
    if args.json:
        tmp = args.json + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(dict(metrics, ckpt_path=path, deploy=args.deploy), f, indent=2)
        except OSError as err:
            raise UserError(f"{args.json}: cannot write ({err.strerror})") from None
        os.replace(tmp, args.json)
    print(line)
    return 0


if __name__ == "__main__":
    run(main)
