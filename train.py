"""Train a model (plain or ACB) on one device or data-parallel under msrun.

    python train.py --config configs/src56_acb.yaml --data_dir /path/to/cifar
    msrun --worker_num 8 python train.py --config configs/sres18_acb.yaml --data_dir /path/to/imagenet
"""
from acnet_ms.cli import quiet_mindspore, run


def main(argv=None):
    from acnet_ms.config import loader as config

    cfg, _ = config.parse(argv, __doc__)
    quiet_mindspore()
    from acnet_ms.training import train

    train(cfg)
    return 0


if __name__ == "__main__":
    run(main)
