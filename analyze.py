"""Kernel analyses of trained checkpoints (magnitude, sparsity, robustness, quantization).

    python analyze.py magnitude --ckpt_path A.ckpt [B.ckpt ...] [--out DIR]

Every option: python analyze.py --help.  The program is :mod:`acnet_ms.apps.analyze` (also
``python -m acnet_ms.apps.analyze`` where acnet_ms is installed).
"""
from acnet_ms.apps.analyze import main
from acnet_ms.cli import run

if __name__ == "__main__":
    run(main)
