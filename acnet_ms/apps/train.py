"""Train a model (plain, or with re-parameterizable blocks of any kind) on one device or data-parallel under msrun.

    python train.py --config configs/src56_acb.yaml --data_dir /path/to/cifar
    msrun --worker_num 8 python train.py --config configs/sres18_acb.yaml --data_dir /path/to/imagenet
"""
from ..cli import quiet_mindspore, run
from ..kinds.table import load_kinds


def main(argv=None):
    quiet_mindspore()  # before anything imports MindSpore (a block-kind module may)
    load_kinds()  # a block-kind module that does not import: one line, whatever the arguments
    from ..config import loader as config

    cfg, _ = config.parse(argv, __doc__)
    quiet_mindspore()
    from ..training import train

    train(cfg)
    return 0


if __name__ == "__main__":
    run(main)
