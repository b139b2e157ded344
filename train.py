"""Train a model (plain or with a block kind) on one device or data-parallel under msrun.

    python train.py --config configs/src56_acb.yaml --data_dir /path/to/cifar

Every option: python train.py --help.  The program is :mod:`acnet_ms.apps.train` (also
``python -m acnet_ms.apps.train`` where acnet_ms is installed).
"""
from acnet_ms.apps.train import main
from acnet_ms.cli import run

if __name__ == "__main__":
    run(main)
