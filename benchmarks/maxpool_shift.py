"""What MindCV's max-pool padding costs a ResNet trained with PyTorch's: top-1 on the digits.

The originals' ResNets (torchvision, DBB, OREPA) pad their stem max-pool by one pixel on every side; MindCV's
``resnet*`` pads with ``pad_mode="same"`` (bottom and right only), so the weights of a converted ``.pth``
compute a shifted function in the stock model (docs/pretrained.md).  This trains ``resnet18`` in the
originals' form (``maxpool_pad="symmetric"``) on scikit-learn's digits, then scores the same weights in that
form and in stock MindCV's ``resnet18``: the top-1 difference is what the shift costs such a model.

    python benchmarks/maxpool_shift.py [--size 32] [--epochs 12] [--seeds 0 1]
"""
import argparse
import os
import tempfile

import numpy as np


def load_split(root, split, size):
    """The digits of ``root/split`` as (N, 3, size, size) float32 images, standardised, and int32 labels."""
    from PIL import Image

    images, labels = [], []
    for label in sorted(os.listdir(os.path.join(root, split)), key=int):
        folder = os.path.join(root, split, label)
        for name in sorted(os.listdir(folder)):
            grey = Image.open(os.path.join(folder, name)).convert("L").resize((size, size), Image.BILINEAR)
            images.append(np.asarray(grey, np.float32) / 255.0)
            labels.append(int(label))
    x = np.repeat(np.stack(images)[:, None], 3, axis=1)
    return (x - 0.5) / 0.25, np.asarray(labels, np.int32)


def train(net, x, y, epochs, seed, batch=32, lr=0.05):
    from mindspore import Tensor, nn

    loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    step = nn.TrainOneStepCell(nn.WithLossCell(net, loss),
                               nn.Momentum(net.trainable_params(), lr, 0.9, weight_decay=1e-4))
    step.set_train()
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i:i + batch]
            step(Tensor(x[idx]), Tensor(y[idx]))


def logits(net, x):
    from mindspore import Tensor

    net.set_train(False)
    return np.concatenate([net(Tensor(x[i:i + 120])).asnumpy() for i in range(0, len(x), 120)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=32, help="input size (the digits are 8 x 8, resized)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args(argv)

    from acnet_ms.cli import quiet_mindspore

    quiet_mindspore()  # before MindSpore is imported: its compiler's warnings stay out of the table
    import mindcv
    import mindspore as ms

    from acnet_ms import create_model
    from acnet_ms.demo import write_digits

    ms.set_context(mode=ms.GRAPH_MODE)
    root = os.path.join(tempfile.gettempdir(), "acnet_ms-digits")
    write_digits(root)
    x, y = load_split(root, "train", args.size)
    vx, vy = load_split(root, "val", args.size)
    print(f"resnet18 trained with PyTorch's max-pool padding on the digits ({len(x)} train, {len(vx)} val, "
          f"{args.size}x{args.size}, {args.epochs} epochs): top-1 in that form and in stock MindCV's resnet18")
    print("| seed | PyTorch's padding (maxpool_pad symmetric) | stock MindCV (pad_mode same) | difference | "
          "largest logit change / largest logit |")
    print("|---|---|---|---|---|")
    for seed in args.seeds:
        ms.set_seed(seed)
        ours = create_model("resnet18", num_classes=10, maxpool_pad="symmetric")
        train(ours, x, y, args.epochs, seed)
        stock = mindcv.create_model("resnet18", num_classes=10)
        ms.load_param_into_net(stock, {p.name: ms.Parameter(p.data.copy(), name=p.name)
                                       for p in ours.get_parameters()}, strict_load=True)
        a, b = logits(ours, vx), logits(stock, vx)
        top_a, top_b = float(np.mean(a.argmax(1) == vy)), float(np.mean(b.argmax(1) == vy))
        shift = float(np.abs(a - b).max() / np.abs(a).max())
        print(f"| {seed} | {top_a:.4f} | {top_b:.4f} | {top_b - top_a:+.4f} | {shift:.2f} |", flush=True)


if __name__ == "__main__":
    main()
