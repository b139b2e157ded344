"""Fold a trained ACB checkpoint into a checkpoint of the plain model.

    python convert.py --ckpt_path TRAINED.ckpt --output DEPLOY.ckpt [--model NAME | --config CFG]
"""
import argparse

from acnet_ms.cli import UserError, quiet_mindspore, run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", required=True, help="training-form checkpoint (may hold optimizer state)")
    parser.add_argument("--output", required=True, help="where to write the plain-model checkpoint")
    parser.add_argument("--model", help="model name, where the checkpoint does not record it")
    parser.add_argument("--config", help="YAML config whose 'model' names the model")
    args = parser.parse_args(argv)
    quiet_mindspore()
    from acnet_ms.config import read_yaml
    from acnet_ms.deploy import convert_checkpoint

    model = args.model
    if model is None and args.config:
        model = read_yaml(args.config).get("model")
        if not model:
            raise UserError(f"{args.config}: no 'model' key")
    convert_checkpoint(args.ckpt_path, args.output, model=model)
    return 0


if __name__ == "__main__":
    run(main)
