"""Validate a checkpoint (or an .onnx graph): top-1, top-5, loss and sample count on a split.

    python validate.py --ckpt_path CKPT --data_dir /path/to/data [--deploy] [--json out.json]

Every option: python validate.py --help.  The program is :mod:`acnet_ms.apps.validate` (also
``python -m acnet_ms.apps.validate`` where acnet_ms is installed).
"""
from acnet_ms.apps.validate import main
from acnet_ms.cli import run

if __name__ == "__main__":
    run(main)
