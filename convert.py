"""Fold a trained ACB checkpoint into a checkpoint of the plain model.

    python convert.py --ckpt_path TRAINED.ckpt --output DEPLOY.ckpt [--model NAME | --config CFG]
                      [--fold_bn] [--export mindir|onnx [--input_shape N,C,H,W]] [--overwrite]

--fold_bn also folds every BatchNorm into the conv before it: the output is a
checkpoint of the fully folded model (convs with bias, no BN), which
acnet_ms.create_model(name, deploy=True) builds and validate.py recognises.
--export writes the converted model as a graph next to --output (same stem),
by default for one image of the size the checkpoint was trained at.  An
existing --output (or graph) is left alone unless --overwrite is given.
"""
import argparse

from acnet_ms.cli import ArgumentParser, UserError, quiet_mindspore, run


def main(argv=None):
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
    args = parser.parse_args(argv)
    quiet_mindspore()
    from acnet_ms.config import read_yaml
    from acnet_ms.deploy import convert_checkpoint

    model = args.model
    if model is None and args.config:
        model = read_yaml(args.config).get("model")
        if not model:
            raise UserError(f"{args.config}: no 'model' key")
    convert_checkpoint(args.ckpt_path, args.output, model=model, fold_bn=args.fold_bn, export=args.export,
                       input_shape=args.input_shape, overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    run(main)
