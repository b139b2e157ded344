"""The table of MindCV families: k x k convs, which became ACBs (of which kind), which stayed plain and why.

    python benchmarks/families.py [--out docs/families.md]

(acnet_ms installed: `make install`, or `pip install -e .`.)

For one small member of every MindCV CNN family, builds the ACB form through
the same registry as every entry point (``acnet_ms.create_model``) and prints
its ``acb_summary``; a model that does not run as shipped in MindSpore (stock
MindCV, one forward pass in graph and in PyNative mode) is listed with the error.
"""
import argparse
import os
import sys


#: family -> one small member (the members tests/test_mindcv_families.py converts end to end), plus rexnet
FAMILIES = {
    "ResNet": "resnet18", "ResNeXt": "resnext50_32x4d", "SE-ResNet": "seresnet18", "Res2Net": "res2net50",
    "ResNeSt": "resnest14", "RegNet": "regnet_x_200mf", "MobileNet v1": "mobilenet_v1_025",
    "MobileNet v2": "mobilenet_v2_035_96", "MobileNet v3": "mobilenet_v3_small_075", "MnasNet": "mnasnet_050",
    "EfficientNet": "efficientnet_b0", "GhostNet": "ghostnet_050", "ShuffleNet v1": "shufflenet_v1_g3_05",
    "ShuffleNet v2": "shufflenet_v2_x0_5", "GoogLeNet": "googlenet", "Inception v3": "inception_v3",
    "Xception": "xception", "DenseNet": "densenet121", "DPN": "dpn92", "VGG": "vgg11",
    "SqueezeNet": "squeezenet1_1", "HRNet": "hrnet_w32", "SK-ResNet": "skresnet18", "ReXNet": "rexnet_09",
}


def stock_error(name):
    """None if stock MindCV's model runs one forward pass in graph and PyNative mode, else the first error line."""
    import mindcv
    import mindspore as ms
    import numpy as np

    size = {"inception_v3": 299, "vgg11": 224}.get(name, 64)
    x = ms.Tensor(np.zeros((1, 3, size, size), np.float32))
    errors = []
    for mode, label in ((ms.GRAPH_MODE, "graph"), (ms.PYNATIVE_MODE, "PyNative")):
        ms.set_context(mode=mode)
        try:
            net = mindcv.create_model(name, num_classes=10)
            net.set_train(False)
            net(x)
        except Exception as err:  # noqa: BLE001  (any failure of the stock model is what we report)
            # the message up to MindSpore's call stack, on one line
            text = " ".join(str(err).split("----")[0].split())
            errors.append((label, f"{type(err).__name__}: {text.split(' Maybe ')[0]}"[:200]))
    if not errors:
        return None
    if len(errors) == 2 and errors[0][1] == errors[1][1]:
        return f"graph and PyNative mode: {errors[0][1]}"
    return "; ".join(f"{label} mode: {e}" for label, e in errors)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args()
    os.environ.setdefault("GLOG_v", "4")
    import mindspore as ms

    ms.set_device("CPU")
    from acnet_ms import acb_summary, create_model

    rows, broken = [], []
    for family, name in FAMILIES.items():
        error = stock_error(name)
        ms.set_context(mode=ms.GRAPH_MODE)
        if error:
            broken.append(f"| {family} | `{name}` | {error} |")
            continue
        s = acb_summary(create_model(name, num_classes=10, block_type="acb"))
        total = s["acbs"] + len(s["plain"])
        kinds = ", ".join(f"{n} {k}" for k, n in s["kinds"].items())
        reasons = {}
        for reason in s["plain"].values():
            reasons[reason] = reasons.get(reason, 0) + 1
        plain = "; ".join(f"{n}: {r}" for r, n in reasons.items()) or "none"
        rows.append(f"| {family} | `{name}` | {total} | {s['acbs']} ({kinds}) | {plain} |")
        print(rows[-1], flush=True)
    text = ("| family | member | k×k convs (k > 1) | ACBs (where the fold's bias goes) | stayed plain, and why |\n"
            "|---|---|---|---|---|\n" + "\n".join(rows))
    if broken:
        text += ("\n\nMindCV 0.3.0 models that do not run as shipped on MindSpore 2.8 (stock model, one forward "
                 "pass):\n\n| family | model | error |\n|---|---|---|\n" + "\n".join(broken))
    print(text)
    if args.out:
        with open(args.out + ".tmp", "w", encoding="utf-8") as f:
            f.write(text + "\n")
        os.replace(args.out + ".tmp", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
