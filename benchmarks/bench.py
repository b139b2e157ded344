"""Benchmarks: inference, training step, conversion and input pipeline, side by side.

    python benchmarks/bench.py [--quick] [--out benchmarks/results.md]

(acnet_ms installed: `make bench` sets that up, or `pip install -e .`.)

Each measurement runs in its own process (so its peak memory is its own) and
prints one JSON line; this driver collects them and prints markdown tables.
Every figure is the median over repeated runs with [min-max]; every ratio is
computed from medians taken in this same run.  CPU, graph mode.
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINDCV_NAME = {"sres18": "resnet18", "sres50": "resnet50"}  # other names are MindCV's own


# ---------------------------------------------------------------- workers (one process each)

def _quiet():
    os.environ.setdefault("GLOG_v", "4")
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    return ms


def build(model, variant, num_classes=1000):
    """The network of one variant: acb (training form, eval mode), acb_onebn (ACB without branch BNs,
    trained as one conv), folded (base), deploy (no BN), mindcv (the stock model)."""
    if variant == "mindcv":
        import mindcv

        return mindcv.create_model(MINDCV_NAME.get(model, model), num_classes=num_classes)
    from acnet_ms import create_model

    if variant == "deploy":
        return create_model(model, num_classes=num_classes, deploy=True)
    if variant == "acb_onebn":
        return create_model(model, num_classes=num_classes, block_type="acb", acb_branch_bn=False)
    return create_model(model, num_classes=num_classes, block_type="acb" if variant == "acb" else "base")


def timed(fn, warmup, repeat):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def interleaved(calls, warmup, repeat):
    """Seconds per call for each named callable, timed round-robin in one process.

    Alternating the variants (in a rotating order) spreads any drift of the
    machine's speed over all of them alike, which separate runs would not.
    """
    names = list(calls)
    for name in names:
        timed(calls[name], warmup, 0)
    times = {name: [] for name in names}
    for r in range(repeat):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name] += timed(calls[name], 0, 1)
    return times


def work_infer(spec):
    ms = _quiet()
    import numpy as np

    nets = {}
    for variant in spec["variants"]:
        nets[variant] = build(spec["model"], variant)
        nets[variant].set_train(False)
    out = {}
    for key, batch, repeat in (("latency", 1, spec["repeat_latency"]), ("throughput", 32, spec["repeat_throughput"])):
        x = ms.Tensor(np.random.default_rng(0).normal(size=(batch, 3, 224, 224)).astype(np.float32))
        out[key] = interleaved({v: (lambda n=n: n(x).asnumpy()) for v, n in nets.items()}, 2, repeat)
    return out


def train_step(ms, model, variant, batch):
    import numpy as np
    from mindspore import nn

    net = build(model, variant)
    opt = nn.Momentum(net.trainable_params(), 0.01, 0.9)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.CrossEntropyLoss()), opt)
    step.set_train()
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.normal(size=(batch, 3, 224, 224)).astype(np.float32))
    y = ms.Tensor(rng.integers(0, 1000, batch).astype(np.int32))
    return lambda: step(x, y).asnumpy()


def work_train(spec):
    """Step times of several variants of one model, interleaved in this process."""
    ms = _quiet()
    calls = {v: train_step(ms, spec["model"], v, spec["batch"]) for v in spec["variants"]}
    return interleaved(calls, 2, spec["repeat"])


def work_train_memory(spec):
    """Peak RSS of one variant's training (compile + two steps), alone in this process."""
    ms = _quiet()
    timed(train_step(ms, spec["model"], spec["variant"], spec["batch"]), 2, 0)
    return {}


def work_make_ckpt(spec):
    """A training-form ACB checkpoint with optimizer state (moments, step, lr) and the ACB layout in its
    metadata, as train.py writes them."""
    _quiet()
    import numpy as np

    from acnet_ms.io.checkpoint import write_checkpoint

    from acnet_ms import acb_layout

    net = build(spec["model"], "acb")
    arrays = {p.name: p.asnumpy() for p in net.get_parameters()}
    arrays.update({"moments." + k: np.zeros_like(v) for k, v in list(arrays.items()) if "moving_" not in k})
    arrays.update(global_step=np.array([1000], np.int32), learning_rate=np.full(1000, 0.1, np.float32))
    write_checkpoint(spec["path"], arrays, dict(model=spec["model"], block_type="acb", num_classes=1000,
                                                acb_layout=acb_layout(net), epoch=1, step=1000))
    return {"bytes": os.path.getsize(spec["path"])}


def work_pipeline(spec):
    _quiet()
    import numpy as np
    from PIL import Image

    from acnet_ms.engine import data
    from acnet_ms.config.loader import defaults

    root = spec["dir"]
    rng = np.random.default_rng(0)
    for c in range(8):
        folder = os.path.join(root, "train", f"c{c}")
        os.makedirs(folder, exist_ok=True)
        for i in range(32):
            # smooth content compresses like photographs do; 500 x 375 is ImageNet's typical size
            base = rng.integers(0, 255, (24, 32, 3)).astype(np.uint8)
            Image.fromarray(base).resize((500, 375), Image.BICUBIC).save(os.path.join(folder, f"{i}.JPEG"),
                                                                         quality=90)
    cfg = dict(defaults(), data_dir=root, num_classes=8, batch_size=32, num_parallel_workers=spec["workers"])
    spec_ = data.inspect(cfg, "train")
    loader = data.create_loader(cfg, spec_, True)
    iterator = loader.create_tuple_iterator(num_epochs=spec["epochs"] + 1)

    def epoch():
        for _ in iterator:
            pass

    times = timed(epoch, 1, spec["epochs"])
    images = loader.get_dataset_size() * 32
    return {"images_per_s": [images / t for t in times]}


def acb_layer_variants(channels):
    """One 3 x 3 layer in three exactly equivalent training formulations, plus the plain conv + BN.

    ``acb``: ACBlock (three convs, three BNs).  ``one_conv_3c``: the three
    kernels (1 x 3 and 3 x 1 zero-embedded at run time) as one conv with 3C
    outputs, one BN over 3C channels (each branch keeps its own per-channel
    batch statistics), summed.  ``square_plus_hv_2c``: the square branch as is,
    the two asymmetric ones as one 3 x 3 conv with 2C outputs.
    """
    import numpy as np
    from mindspore import Parameter, Tensor, nn, ops

    from acnet_ms.kinds.acb.cell import ACBlock

    def weight(*shape):
        return Parameter(Tensor(np.random.default_rng(len(shape)).normal(0, 0.05, shape).astype(np.float32)))

    class Plain(nn.Cell):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(channels, channels, 3, pad_mode="pad", padding=1)
            self.bn = nn.BatchNorm2d(channels)

        def construct(self, x):
            return self.bn(self.conv(x))

    class OneConv(nn.Cell):
        def __init__(self):
            super().__init__()
            self.w_square, self.w_hor, self.w_ver = weight(channels, channels, 3, 3), weight(channels, channels, 1, 3), \
                weight(channels, channels, 3, 1)
            self.conv = ops.Conv2D(3 * channels, 3, pad_mode="pad", pad=1)
            self.bn = nn.BatchNorm2d(3 * channels)

        def construct(self, x):
            kernel = ops.concat((self.w_square, ops.pad(self.w_hor, (0, 0, 1, 1)), ops.pad(self.w_ver, (1, 1, 0, 0))))
            y = self.bn(self.conv(x, kernel))
            return y[:, :channels] + y[:, channels:2 * channels] + y[:, 2 * channels:]

    class SquarePlusHV(nn.Cell):
        def __init__(self):
            super().__init__()
            self.square = Plain()
            self.w_hor, self.w_ver = weight(channels, channels, 1, 3), weight(channels, channels, 3, 1)
            self.conv = ops.Conv2D(2 * channels, 3, pad_mode="pad", pad=1)
            self.bn = nn.BatchNorm2d(2 * channels)

        def construct(self, x):
            kernel = ops.concat((ops.pad(self.w_hor, (0, 0, 1, 1)), ops.pad(self.w_ver, (1, 1, 0, 0))))
            y = self.bn(self.conv(x, kernel))
            return self.square(x) + y[:, :channels] + y[:, channels:]

    return {"plain": Plain(), "acb": ACBlock(channels, channels, 3), "one_conv_3c": OneConv(),
            "square_plus_hv_2c": SquarePlusHV()}


def work_acb_layer(spec):
    ms = _quiet()
    import numpy as np
    from mindspore import nn, ops

    class Loss(nn.Cell):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def construct(self, x):
            return (self.net(x) ** 2).mean()

    class Grads(nn.Cell):
        def __init__(self, net):
            super().__init__()
            self.loss = Loss(net)
            self.weights = ms.ParameterTuple(net.trainable_params())
            self.grad = ops.GradOperation(get_by_list=True)

        def construct(self, x):
            return self.grad(self.loss, self.weights)(x)

    x = ms.Tensor(np.random.default_rng(0).normal(size=(16, spec["channels"], 56, 56)).astype(np.float32))
    calls = {}
    for name, net in acb_layer_variants(spec["channels"]).items():
        net.set_train(True)
        step = Grads(net)
        calls[name] = lambda step=step: [g.asnumpy() for g in step(x)]
    return interleaved(calls, 2, spec["repeat"])


def work_step_memory(spec):
    """One training step of the project's train step (64 px, batch 2), alone in this process: in graph mode
    (``spec["mode"] == "graph"``: compilation plus the step) or PyNative mode."""
    ms = _quiet()
    import numpy as np

    from acnet_ms import create_model
    from acnet_ms.config.loader import defaults
    from acnet_ms.training.factories import build_train_step

    if spec.get("mode") != "graph":
        ms.set_context(mode=ms.PYNATIVE_MODE)
    variant = spec["variant"]
    block = dict(block_type="acb", block_options=dict(branch_bn=False)) if variant == "acb_onebn" else \
        dict(block_type=variant)
    cfg = dict(defaults(), device_target="CPU", model=spec["model"], opt="momentum", **block)
    step, _ = build_train_step(create_model(spec["model"], num_classes=10, **block), cfg, [0.01] * 4)
    x = ms.Tensor(np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32))
    step(x, ms.Tensor(np.zeros(2, np.int32)))[0].asnumpy()
    return {}


WORKERS = {"infer": work_infer, "train": work_train, "train_memory": work_train_memory, "acb_layer": work_acb_layer, "make_ckpt": work_make_ckpt, "pipeline": work_pipeline, "step_memory": work_step_memory}


def count_macs(net, shape):
    """Multiply-adds of one forward pass of ``net`` on a float32 input of ``shape`` (PyNative, hooks).

    Counted: every ``nn.Conv2d`` (output elements x input channels per group x kernel taps),
    ``nn.Dense`` and ``nn.AvgPool2d`` (one add per window tap); a re-parameterizable block without a conv
    cell inside (one conv over a kernel built from its parameters, e.g. OREPA or ACB without branch BNs)
    counts as the conv it deploys to (its kernel's shape), the kernel's construction left out (it does
    not grow with the batch).  Elementwise ops (BN, activations, sums) are not counted.
    """
    import mindspore as ms
    import numpy as np
    from mindspore import nn

    from acnet_ms.reparam.switch import reparam_blocks

    total = [0]

    def conv(cell, args, out):
        total[0] += out.size * (cell.in_channels // cell.group) * int(np.prod(cell.kernel_size))

    def dense(cell, args, out):
        total[0] += out.size * cell.in_channels

    def pool(cell, args, out):
        k = cell.kernel_size if isinstance(cell.kernel_size, (tuple, list)) else (cell.kernel_size,) * 2
        total[0] += out.size * int(np.prod(k[-2:]))

    def one_conv(cell, args, out):
        kernel = cell.get_equivalent_kernel_bias()[0]
        total[0] += out.size * int(np.prod(kernel.shape[1:]))

    blocks = {id(c) for _, c in reparam_blocks(net)
              if not any(isinstance(d, nn.Conv2d) for _, d in c.cells_and_names())}
    handles = []
    for _, cell in net.cells_and_names():
        hook = (one_conv if id(cell) in blocks else conv if isinstance(cell, nn.Conv2d) else
                dense if isinstance(cell, nn.Dense) else pool if isinstance(cell, nn.AvgPool2d) else None)
        if hook is not None:
            handles.append(cell.register_forward_hook(hook))
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        net.set_train(False)
        net(ms.Tensor(np.zeros(shape, np.float32)))
    finally:
        ms.set_context(mode=mode)
        for h in handles:
            h.remove()
    return total[0]


def kind_model(model, kind):
    from acnet_ms import create_model

    return create_model(model, num_classes=1000, block_type=kind)


def work_kinds_train(spec):
    """Each kind's training step next to base's (interleaved) and their forward multiply-adds."""
    ms = _quiet()
    import numpy as np

    batch, size = spec["batch"], spec["size"]
    calls, macs = {}, {}
    for kind in spec["kinds"]:
        net = kind_model(spec["model"], kind)
        macs[kind] = count_macs(net, (1, 3, size, size))
        opt = ms.nn.Momentum(net.trainable_params(), 0.01, 0.9)
        step = ms.nn.TrainOneStepCell(ms.nn.WithLossCell(net, ms.nn.CrossEntropyLoss()), opt)
        step.set_train()
        rng = np.random.default_rng(0)
        x = ms.Tensor(rng.normal(size=(batch, 3, size, size)).astype(np.float32))
        y = ms.Tensor(rng.integers(0, 1000, batch).astype(np.int32))
        calls[kind] = lambda step=step, x=x, y=y: step(x, y).asnumpy()
    return dict(times=interleaved(calls, 2, spec["repeat"]), macs=macs)


def work_kinds_folded(spec):
    """Batch-1 latency of the stock MindCV model holding each kind's folded weights, against the stock model
    with its own weights (round-robin): the folded graph is the stock graph, whatever the kind."""
    ms = _quiet()
    import mindcv
    import numpy as np

    from acnet_ms.reparam.state import fold_state
    from acnet_ms.reparam.transform import block_layout

    stock_name = MINDCV_NAME.get(spec["model"], spec["model"])
    x = ms.Tensor(np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32))
    nets = {"stock": mindcv.create_model(stock_name, num_classes=1000)}
    for kind in spec["kinds"]:
        net = kind_model(spec["model"], kind)
        stock = mindcv.create_model(stock_name, num_classes=1000)
        state = {p.name: p.asnumpy() for p in net.get_parameters()}
        arrays, _ = fold_state(state, block_layout(net), network=list(state))
        ms.load_param_into_net(stock, {k: ms.Parameter(ms.Tensor(v), name=k) for k, v in arrays.items()},
                               strict_load=True)
        nets[kind] = stock
    for net in nets.values():
        net.set_train(False)
    return interleaved({k: (lambda n=n: n(x).asnumpy()) for k, n in nets.items()}, 2, spec["repeat"])


WORKERS.update(kinds_train=work_kinds_train, kinds_folded=work_kinds_folded)


# ---------------------------------------------------------------- driver

def run_worker(spec):
    """Run one worker process; returns its JSON result plus its peak RSS in MB."""
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"benchmark worker {spec} failed:\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    return result


def run_capped_worker(spec, cap_mb):
    """Peak RSS (MB) of one worker, watched twice a second; the worker is killed past ``cap_mb`` (returns None)."""
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = 0.0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
        except (OSError, StopIteration):
            rss = 0.0
        peak = max(peak, rss)
        if rss > cap_mb:
            proc.kill()
            proc.wait()
            return None
        time.sleep(0.5)
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"benchmark worker {spec} failed")
    return json.loads(out.strip().splitlines()[-1])["peak_mb"]


def run_timed_command(cmd):
    """Wall seconds and peak RSS (MB) of one command, measured for that child alone."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def work_onnx(spec):
    """Batch-1 latency of the exported fully folded graph in onnxruntime, next to MindSpore graph mode."""
    ms = _quiet()
    import numpy as np
    import onnxruntime as ort

    from acnet_ms.convert.pipeline import export_graph

    net = build(spec["model"], "deploy")
    net.set_train(False)
    stock = build(spec["model"], "mindcv")
    stock.set_train(False)
    x = np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32)
    path = os.path.join(spec["dir"], "model.onnx")
    os.replace(export_graph(net, x.shape, path, "onnx"), path)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    xt = ms.Tensor(x)
    return interleaved({"onnxruntime": lambda: session.run(None, feed), "mindspore_folded": lambda: net(xt).asnumpy(),
                        "mindspore_stock": lambda: stock(xt).asnumpy()}, 3, spec["repeat"])


WORKERS["onnx"] = work_onnx


def work_int8(spec):
    """Latency of the fully folded graph in onnxruntime, FP32 and INT8 (convert.py --int8's quantization)."""
    _quiet()
    import numpy as np

    from acnet_ms.convert.pipeline import export_graph
    from acnet_ms.convert.quantize import Graph, quantize_graph

    net = build(spec["model"], "deploy")
    net.set_train(False)
    rng = np.random.default_rng(0)
    shape = (spec["batch"], 3, 224, 224)
    fp32, int8 = (os.path.join(spec["dir"], f"{spec['model']}_b{spec['batch']}{s}.onnx") for s in ("", ".int8"))
    os.replace(export_graph(net, shape, fp32, "onnx"), fp32)
    calibration = [rng.normal(size=shape).astype(np.float32) for _ in range(max(1, 16 // spec["batch"]))]
    os.replace(quantize_graph(fp32, int8, calibration), int8)
    x = rng.normal(size=shape).astype(np.float32)
    graphs = {"fp32": Graph(fp32), "int8": Graph(int8)}
    return interleaved({name: (lambda g=g: g.run(x)) for name, g in graphs.items()}, 3, spec["repeat"])


WORKERS["int8"] = work_int8


def med(values):
    return statistics.median(values)


def fmt(values, scale=1.0, digits=1):
    values = [v * scale for v in values]
    return f"{med(values):.{digits}f} [{min(values):.{digits}f}–{max(values):.{digits}f}]"


def inference_section(quick):
    rows, ratios = [], []
    variants = ["acb", "folded", "deploy", "mindcv"]
    for model in ("sres18", "sres50", "skresnet18"):
        res = run_worker(dict(kind="infer", model=model, variants=variants, repeat_latency=8 if quick else 60,
                              repeat_throughput=2 if quick else 8))
        lat = res["latency"]
        for variant in variants:
            thr = [32 / t for t in res["throughput"][variant]]
            rows.append(f"| `{model}` | {variant} | {fmt(lat[variant], 1000)} | {fmt(thr)} |")
        ratios.append(f"| `{model}` | {med(lat['folded']) / med(lat['mindcv']):.3f} | "
                      f"{med(lat['deploy']) / med(lat['mindcv']):.3f} | {med(lat['acb']) / med(lat['mindcv']):.3f} | "
                      f"{min(lat['folded']) / min(lat['mindcv']):.3f} | {min(lat['deploy']) / min(lat['mindcv']):.3f} |")
    return ("### Inference (224×224)\n\n| model | form | latency, batch 1, ms | throughput, batch 32, images/s |\n"
            "|---|---|---|---|\n" + "\n".join(rows) +
            "\n\nForms: `acb` = ACB training form in eval mode; `folded` = our base model (what convert.py's "
            "output loads into); `deploy` = fully folded, no BN (`create_model(name, deploy=True)`); "
            "`mindcv` = stock MindCV model of the same architecture. The four forms of a model are timed "
            "round-robin in one process.\n\n"
            "Latency ratios from medians and from minima: interference on a shared host only ever "
            "adds time, so the fastest of many runs estimates a graph's own cost best.\n\n"
            "| model | folded ÷ MindCV latency | fully folded ÷ MindCV | ACB training form ÷ MindCV | "
            "folded ÷ MindCV, minima | fully folded ÷ MindCV, minima |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(ratios))


def train_section(quick, batch):
    rows, meds, peaks = [], {}, {}
    plan = {"sres18": ["folded", "acb", "acb_onebn"], "skresnet18": ["folded", "acb", "mindcv"],
            "mobilenet_v2_100": ["folded", "acb"], "regnet_x_400mf": ["folded", "acb"]}
    for model, variants in plan.items():
        times = run_worker(dict(kind="train", model=model, variants=variants, batch=batch, repeat=3 if quick else 10))
        for variant in variants:
            peak = run_worker(dict(kind="train_memory", model=model, variant=variant, batch=batch))["peak_mb"]
            peaks[(model, variant)] = peak
            meds[(model, variant)] = med(times[variant])
            rows.append(f"| `{model}` | {'base' if variant == 'folded' else variant} | "
                        f"{fmt(times[variant], 1000, 0)} | {batch / med(times[variant]):.1f} | {peak:.0f} |")

    def r(a, b):
        return f"{meds[a] / meds[b]:.3f}"

    ratio = "\n".join([
        f"| ACB `sres18` ÷ base `sres18` | {r(('sres18', 'acb'), ('sres18', 'folded'))} |",
        f"| ACB without branch BNs (one conv) `sres18` ÷ base `sres18` | "
        f"{r(('sres18', 'acb_onebn'), ('sres18', 'folded'))} |",
        f"| ACB `skresnet18` ÷ base `skresnet18` | {r(('skresnet18', 'acb'), ('skresnet18', 'folded'))} |",
        f"| our base `skresnet18` ÷ MindCV `skresnet18` | {r(('skresnet18', 'folded'), ('skresnet18', 'mindcv'))} |",
        f"| ACB `mobilenet_v2_100` ÷ base | {r(('mobilenet_v2_100', 'acb'), ('mobilenet_v2_100', 'folded'))} |",
        f"| ACB `regnet_x_400mf` ÷ base | {r(('regnet_x_400mf', 'acb'), ('regnet_x_400mf', 'folded'))} |",
        f"| peak RSS (compile + two steps), ACB `sres18` ÷ base (target ≤ 1.5) | "
        f"{peaks[('sres18', 'acb')] / peaks[('sres18', 'folded')]:.2f} |",
        f"| peak RSS, ACB `mobilenet_v2_100` ÷ base | "
        f"{peaks[('mobilenet_v2_100', 'acb')] / peaks[('mobilenet_v2_100', 'folded')]:.2f} |"])
    return (f"### Training step (forward + backward + SGD update, batch {batch}, 224×224)\n\n"
            "Step times of a model's forms are taken round-robin in one process; peak RSS (compile + "
            "two steps) in a process of its own per form. `acb_onebn` = `acb_branch_bn: false` (one BN after "
            "the summed convs, trained as one conv over the summed kernel). Base forms of MindCV names are "
            "MindCV's models.\n\n"
            "| model | form | step, ms | images/s | peak RSS, MB |\n|---|---|---|---|---|\n" + "\n".join(rows) +
            "\n\n| ratio | value |\n|---|---|\n" + ratio)


def memory_section(cap_gb=20):
    """Peak memory of graph compilation plus one training step, ACB / base, for a small and a large graph
    (HRNet: 272 ACBs), and of one PyNative step."""
    rows = []
    for model in ("sres18", "hrnet_w32"):
        for mode in ("graph", "pynative"):
            peaks = {v: run_capped_worker(dict(kind="step_memory", model=model, variant=v, mode=mode),
                                          cap_gb * 1024) for v in ("base", "acb", "acb_onebn")}
            shown = {v: f"{p / 1024:.2f}" if p else f"> {cap_gb} (stopped)" for v, p in peaks.items()}

            def ratio(v):
                if peaks[v] and peaks["base"]:
                    return f"{peaks[v] / peaks['base']:.2f}"
                return f"> {cap_gb * 1024 / peaks['base']:.2f}" if peaks["base"] else "—"
            rows.append(f"| `{model}` | {mode} | {shown['base']} | {shown['acb']} | {ratio('acb')} | "
                        f"{shown['acb_onebn']} | {ratio('acb_onebn')} |")
    return ("### Memory of compiling and running one training step (64 px, batch 2)\n\n"
            "Peak RSS of a process that builds the model and runs one step of the project's train step "
            "(momentum): in graph mode that includes compiling the step's graph. `acb_onebn` = ACB without "
            f"branch BNs (one conv over the summed kernel). A process past {cap_gb} GB is stopped. "
            "Target: ACB ÷ base ≤ 1.5.\n\n"
            "| model | mode | base, GB | ACB, GB | ACB ÷ base | ACB one-conv, GB | one-conv ÷ base |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(rows))


def onnx_section(quick, tmp):
    res = run_worker(dict(kind="onnx", model="sres18", dir=tmp, repeat=10 if quick else 60))
    res.pop("peak_mb")
    stock = med(res["mindspore_stock"])
    rows = [f"| {name} | {fmt(t, 1000)} | {med(t) / stock:.2f} |" for name, t in res.items()]
    return ("### Deployed speed: the exported ONNX graph (fully folded `sres18`, batch 1, 224×224)\n\n"
            "`convert.py --fold_bn --export onnx` output in onnxruntime (CPU provider), next to the same "
            "fully folded model and stock MindCV `resnet18` in MindSpore graph mode, timed round-robin.\n\n"
            "| runtime | latency, ms | ÷ MindSpore stock `resnet18` |\n|---|---|---|\n" + "\n".join(rows))


def int8_section(quick, tmp):
    rows = []
    for model in ("sres18", "mobilenet_v2_100"):
        for batch in (1, 16):
            res = run_worker(dict(kind="int8", model=model, batch=batch, dir=tmp,
                                  repeat=(6 if quick else 30) if batch == 1 else (3 if quick else 12)))
            rows.append(f"| `{model}` | {batch} | {fmt(res['fp32'], 1000)} | {fmt(res['int8'], 1000)} | "
                        f"{med(res['int8']) / med(res['fp32']):.2f} |")
    return ("### INT8 in onnxruntime (fully folded graph, 224×224, CPU provider)\n\n"
            "The exported FP32 graph and its static INT8 quantization (`convert.py --int8`: QDQ, per-channel "
            "INT8 weights, UINT8 activations; random weights and calibration images, which do not change the "
            "speed), timed round-robin. Target: INT8 ÷ FP32 ≤ 0.6 for `sres18` at batch 16.\n\n"
            "| model | batch | FP32, ms | INT8, ms | INT8 ÷ FP32 |\n|---|---|---|---|---|\n" + "\n".join(rows))


def families_section(quick):
    rows = []
    for model in ("mobilenet_v2_100", "regnet_x_400mf", "efficientnet_b0", "densenet121", "ghostnet_100"):
        res = run_worker(dict(kind="infer", model=model, variants=["folded", "deploy", "mindcv"],
                              repeat_latency=8 if quick else 40, repeat_throughput=1 if quick else 3))
        lat = res["latency"]
        rows.append(f"| `{model}` | {fmt(lat['mindcv'], 1000)} | {med(lat['folded']) / med(lat['mindcv']):.3f} | "
                    f"{min(lat['folded']) / min(lat['mindcv']):.3f} | {med(lat['deploy']) / med(lat['mindcv']):.3f} |")
    return ("### Folded MindCV models (batch-1 latency, 224×224)\n\n"
            "A converted checkpoint loads into the stock model, so the folded form *is* MindCV's graph; "
            "`folded` here is `acnet_ms.create_model(name)` timed against a second `mindcv.create_model(name)` "
            "instance, round-robin (the spread of identical graphs), and `deploy` the fully folded form.\n\n"
            "| model | stock MindCV, ms | folded ÷ stock, medians | folded ÷ stock, minima | "
            "fully folded ÷ stock |\n|---|---|---|---|---|\n" + "\n".join(rows))


def acb_layer_section(quick):
    res = run_worker(dict(kind="acb_layer", channels=64, repeat=5 if quick else 25))
    res.pop("peak_mb")
    base = med(res["plain"])
    rows = [f"| {name} | {fmt(t, 1000)} | {med(t) / base:.2f} |" for name, t in res.items()]
    return ("### One 3×3 layer, forward + backward in training mode (64→64 channels, 56×56, batch 16)\n\n"
            "The same function (every branch normalised by its own batch statistics) in three formulations.\n\n"
            "| formulation | ms | ÷ plain conv + BN |\n|---|---|---|\n" + "\n".join(rows))


def convert_section(quick, tmp):
    rows = []
    for model in ("sres50", "resnext50_32x4d", "sknet50"):
        src = os.path.join(tmp, f"{model}_acb.ckpt")
        made = run_worker(dict(kind="make_ckpt", model=model, path=src))
        walls, rss = [], []
        for i in range(2 if quick else 3):
            out = os.path.join(tmp, f"{model}_deploy{i}.ckpt")
            wall, peak = run_timed_command([sys.executable, "convert.py", "--ckpt_path", src, "--output", out])
            walls.append(wall)
            rss.append(peak)
        rows.append(f"| `{model}` | {made['bytes'] / 1e6:.0f} | {fmt(walls, 1, 2)} | {max(rss):.0f} |")
    return ("### convert.py (ACB checkpoint with optimizer state → plain checkpoint)\n\n"
            "| model | input file, MB | wall incl. start-up, s | peak RSS, MB |\n|---|---|---|---|\n" + "\n".join(rows))


def pipeline_section(quick, tmp):
    rows = []
    for workers in (1, 2):
        res = run_worker(dict(kind="pipeline", dir=os.path.join(tmp, f"jpeg{workers}"), workers=workers,
                              epochs=2 if quick else 4))
        rows.append(f"| {workers} | {fmt(res['images_per_s'])} |")
    return ("### Input pipeline (JPEG 500×375 decode + random resized crop 224 + flip + normalize, batch 32)\n\n"
            "| parallel workers | images/s |\n|---|---|\n" + "\n".join(rows))


def kinds_section(quick, batch=8, size=224):
    """Every registered kind on sres18 and mobilenet_v2_100: training step / base next to the forward
    multiply-add ratio (the step's FLOP floor), and folded / stock latency."""
    from acnet_ms import kinds

    names = kinds.kind_names()
    train_rows, lat_rows = [], []
    for model in ("sres18", "mobilenet_v2_100"):
        res = run_worker(dict(kind="kinds_train", model=model, kinds=["base"] + names, batch=batch, size=size,
                              repeat=3 if quick else 8))
        times, macs = res["times"], res["macs"]
        for kind in ["base"] + names:
            train_rows.append(f"| `{model}` | {kind} | {fmt(times[kind], 1000, 0)} | "
                              f"{med(times[kind]) / med(times['base']):.2f} | {macs[kind] / macs['base']:.2f} |")
        lat = run_worker(dict(kind="kinds_folded", model=model, kinds=names, repeat=8 if quick else 40))
        for kind in names:
            lat_rows.append(f"| `{model}` | {kind} | {fmt(lat[kind], 1000)} | {med(lat[kind]) / med(lat['stock']):.3f} | "
                            f"{min(lat[kind]) / min(lat['stock']):.3f} |")
    return (f"### Block kinds: training step and folded latency ({size}×{size})\n\n"
            f"Training step (forward + backward + momentum update, batch {batch}) of each kind's training form, "
            "timed round-robin with the base model in one process. Multiply-add ratio: the training form's "
            "forward multiply-adds ÷ base's (`count_macs`: convs, dense layers and average pools; a kind "
            "trained as one conv counts that conv), the step's FLOP floor: a step at that ratio costs "
            "exactly its extra arithmetic.\n\n"
            "| model | kind | step, ms | step ÷ base | multiply-adds ÷ base |\n|---|---|---|---|---|\n" +
            "\n".join(train_rows) +
            "\n\nFolded latency (batch 1): the stock MindCV model holding each kind's folded weights against the "
            "stock model with its own, round-robin.\n\n"
            "| model | kind | folded, ms | folded ÷ stock, medians | folded ÷ stock, minima |\n|---|---|---|---|---|\n"
            + "\n".join(lat_rows))


def merge_section(text, section, header):
    """``text`` (a results file) with ``section`` in place of the section of the same title (its heading up to
    the first parenthesis), or added before the closing line; a line of when and where it was measured
    follows the heading."""
    title = section.split("\n", 1)[0].split("(")[0].strip()
    lines = text.rstrip("\n").split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith("### ")]
    closing = next((i for i, line in enumerate(lines) if line.startswith("(benchmark run took")), len(lines))
    mine = next((i for i in starts if lines[i].split("(")[0].strip() == title), None)
    if mine is None:
        begin = end = closing
    else:
        begin, end = mine, next((i for i in starts if i > mine), closing)
    head, body = section.split("\n", 1)
    stamp = "(this section: " + header.split("\n", 1)[0].rstrip(".") + ")"
    new = ([""] if begin and lines[begin - 1] else []) + [head, "", stamp] + body.split("\n") + [""]
    return "\n".join(lines[:begin] + new + lines[end:]) + "\n"


def machine():
    import importlib.metadata as md

    return (f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2 ** 30:.0f} GiB, Python "
            f"{platform.python_version()}, MindSpore {md.version('mindspore')}, MindCV {md.version('mindcv')}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--train_batch", type=int, default=16, help="batch of the training-step benchmark")
    parser.add_argument("--only", choices=("infer", "families", "train", "memory", "onnx", "int8", "acb_layer",
                                           "convert", "pipeline", "kinds"),
                        help="one section (with --out: replaces that section in the file, keeping the others)")
    parser.add_argument("--out", default=None, help="also write the tables to this markdown file")
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        result = WORKERS[spec["kind"]](spec)
        result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return 0
    start = time.perf_counter()
    parts = [f"Measured {time.strftime('%Y-%m-%d')} on {machine()}; graph mode.\n"
             f"Command: `python benchmarks/bench.py{' --quick' if args.quick else ''}`"
             f"{'' if args.train_batch == 16 else f' --train_batch {args.train_batch}'}."]
    with tempfile.TemporaryDirectory() as tmp:
        sections = [("infer", lambda: inference_section(args.quick)),
                    ("families", lambda: families_section(args.quick)),
                    ("train", lambda: train_section(args.quick, args.train_batch)),
                    ("memory", lambda: memory_section()),
                    ("onnx", lambda: onnx_section(args.quick, tmp)),
                    ("int8", lambda: int8_section(args.quick, tmp)),
                    ("acb_layer", lambda: acb_layer_section(args.quick)),
                    ("convert", lambda: convert_section(args.quick, tmp)),
                    ("pipeline", lambda: pipeline_section(args.quick, tmp)),
                    ("kinds", lambda: kinds_section(args.quick))]
        for name, section in sections:
            if args.only in (None, name):
                parts.append(section())
                print(parts[-1] + "\n", flush=True)
    text = "\n\n".join(parts) + f"\n\n(benchmark run took {time.perf_counter() - start:.0f} s)\n"
    if args.out and args.only and os.path.exists(args.out):
        with open(args.out, encoding="utf-8") as f:
            text = merge_section(f.read(), parts[-1], parts[0])
    if args.out:
        with open(args.out + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(args.out + ".tmp", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
