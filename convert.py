"""Fold a training checkpoint into a checkpoint of the plain (or fully folded) model.

    python convert.py --ckpt_path TRAINED.ckpt --output DEPLOY.ckpt [--fold_bn] [--export onnx]
    python convert.py --ckpt_path PUBLISHED.pth --output MINDCV.ckpt --model NAME

Every option: python convert.py --help.  The program is :mod:`acnet_ms.apps.convert` (also
``python -m acnet_ms.apps.convert`` where acnet_ms is installed).
"""
from acnet_ms.apps.convert import main
from acnet_ms.cli import run

if __name__ == "__main__":
    run(main)
