"""Fold a trained checkpoint's re-parameterizable blocks (any kind) into a checkpoint of the plain model.

    python convert.py --ckpt_path TRAINED.ckpt --output DEPLOY.ckpt [--model NAME | --config CFG]
                      [--fold_bn] [--export mindir|onnx [--input_shape N,C,H,W]] [--overwrite]
                      [--num_classes N] [--block_type KIND] [--block_options '{branches: h}']
                      [--int8 --calib_data DIR [--calib_samples N] [--calib_method minmax|entropy|percentile]]

A checkpoint written by train.py records its model, classes, block kind and
options.  One that records nothing (``mindspore.save_checkpoint`` in a loop of
your own, MindCV's trainer) needs --model (or --config); its class count is
read from the model's classifier entries, its block kind and the options its
entries show (ACB: which branches, branch BNs) from the entries, and the
others (ACB: position) from --block_options or --config, else the defaults,
said in one line.

--fold_bn also folds every BatchNorm into the conv before it: the output is a
checkpoint of the fully folded model (convs with bias, no BN), which
acnet_ms.create_model(name, deploy=True) builds and validate.py recognises.
MindCV's RepVGG (repvgg_*) folds into its single-branch deploy form, one conv
with bias per block (stage1.0.rbr_reparam.weight/bias): a plain checkpoint of
it (MindCV's or train.py's) does so without --fold_bn too; one with ACBs
converts to MindCV's stock three-branch model, and with --fold_bn on to the
deploy form.
--export writes the converted model as a graph next to --output (same stem),
by default for one image of the size the checkpoint was trained at.  An
existing --output (or graph) is left alone unless --overwrite is given.
--int8 (with --export onnx) also writes <stem>.int8.onnx: the graph quantized
by onnxruntime (QDQ, per-channel INT8 weights), calibrated on N images of DIR
(DIR/<class>/<image>) through the transforms validate.py uses for this
checkpoint.  Needs pip install -r requirements-onnx.txt; see docs/int8.md.

A PyTorch file (.pth, .pt, .pth.tar) of the DBB, OREPA or RepVGG authors' models, or of a torchvision
ResNet, converts into a checkpoint of the MindCV model --model names (read without torch, running no
pickled code; the source is recognised from its entries, or --source dbb|orepa|repvgg|torchvision):
every block of the original folds into the model's plain conv and BN; --fold_bn, --export and --int8
fold it on and export it as they do a checkpoint.  With --block_type dbb the output is our dbb kind's
training form instead, the original's DBBs kept branch for branch, to finetune.  See docs/pretrained.md.
"""
import argparse

from ..cli import ArgumentParser, UserError, quiet_mindspore, run
from ..kinds.table import load_kinds


def main(argv=None):
    quiet_mindspore()  # before anything imports MindSpore (a block-kind module may)
    load_kinds()  # a block-kind module that does not import: one line, whatever the arguments
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", required=True, help="training-form checkpoint (may hold optimizer state)")
    parser.add_argument("--output", required=True, help="where to write the plain-model checkpoint")
    parser.add_argument("--model", help="model name, where the checkpoint does not record it")
    parser.add_argument("--config", help="YAML config whose 'model' names the model")
    parser.add_argument("--fold_bn", action="store_true",
                        help="fold every BatchNorm too: a checkpoint of the fully folded (BN-free) model")
    parser.add_argument("--export", metavar="FORMAT",
                        help="also write the converted model as a graph: mindir or onnx (next to --output)")
    parser.add_argument("--input_shape", metavar="N,C,H,W",
                        help="the exported graph's input shape (default: 1,3,S,S with S the checkpoint's "
                             "training image_resize, else the model's input size)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --output (and the exported graph) if it exists; without it, refuse")
    parser.add_argument("--num_classes", type=int, help="classes, where the checkpoint does not record them "
                        "(default: read from the model's classifier entries)")
    parser.add_argument("--block_type", help="block kind, where the checkpoint does not record it (default: "
                        "the kind whose entries it holds)")
    parser.add_argument("--block_options", metavar="YAML", help="the kind's options, where the checkpoint does "
                        "not record them, e.g. '{position: corner}'")
    parser.add_argument("--source", help="with a .pth: whose model it is (dbb, orepa, repvgg, torchvision; "
                        "default: recognised from its entries)")
    parser.add_argument("--int8", action="store_true",
                        help="with --export onnx: also write <stem>.int8.onnx, quantized by onnxruntime")
    parser.add_argument("--calib_data", metavar="DIR", help="calibration images for --int8 (DIR/<class>/<image>)")
    parser.add_argument("--calib_samples", type=int, metavar="N",
                        help="how many calibration images, spread evenly over DIR (default 256)")
    parser.add_argument("--calib_method", choices=("minmax", "entropy", "percentile"),
                        help="how activation ranges are chosen (default minmax)")
    parser.add_argument("--any_class_names", action="store_true",
                        help="calibrate even if --calib_data's class folders differ from those the checkpoint records")
    args = parser.parse_args(argv)
    quiet_mindspore()
    from ..convert.foreign.pipeline import is_pth

    if is_pth(args.ckpt_path):
        return convert_pth(args)
    if args.source:
        raise UserError(f"--source applies to a PyTorch file (.pth), not {args.ckpt_path}")
    from ..config.loader import conversion_options
    from ..convert.pipeline import ConvertOptions, convert_checkpoint

    explicit, from_config = conversion_options(args.config, vars(args))
    options = ConvertOptions(fold_bn=args.fold_bn, export=args.export, input_shape=args.input_shape,
                             overwrite=args.overwrite, fallback=from_config, int8=args.int8,
                             calib_data=args.calib_data, calib_samples=args.calib_samples,
                             calib_method=args.calib_method, any_class_names=args.any_class_names, **explicit)
    convert_checkpoint(args.ckpt_path, args.output, options)
    return 0


def convert_pth(args):
    """A PyTorch file into a checkpoint of a MindCV model (or our kind's training form of it), folded on and
    exported as asked: the conversion pipeline, its reader the ``.pth`` importer."""
    from ..convert.pipeline import ConvertOptions, convert_checkpoint

    extra = [flag for flag, on in (("--block_options", args.block_options), ("--config", args.config)) if on]
    if extra:
        raise UserError(f"{extra[0]} does not apply to a .pth: convert it first, then run convert.py on the "
                        f"checkpoint it writes")
    options = ConvertOptions(model=args.model, source=args.source, block_type=args.block_type,
                             num_classes=args.num_classes, fold_bn=args.fold_bn, export=args.export,
                             input_shape=args.input_shape, overwrite=args.overwrite, int8=args.int8,
                             calib_data=args.calib_data, calib_samples=args.calib_samples,
                             calib_method=args.calib_method, any_class_names=args.any_class_names)
    convert_checkpoint(args.ckpt_path, args.output, options)
    return 0


if __name__ == "__main__":
    run(main)
