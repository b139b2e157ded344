"""What the benchmarks measure: each function here is one worker, run in a process of its own.

    python benchmarks/workloads.py --worker '<spec JSON>' --result <file>   (what harness.run starts)

A worker takes its spec (a dict; ``spec["kind"]`` names the worker) and
returns a dict of measurements (seconds per call, images per second, bytes,
multiply-adds); :mod:`harness` adds the process's peak memory and writes it
as JSON.  Timings of several forms of one model are taken round-robin in one
process (``harness.interleaved``).  CPU, graph mode unless a worker says otherwise.
"""
import os
import sys

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
from harness import interleaved, quiet_mindspore, timed, worker_entry  # noqa: E402  (benchmarks/ is not a package)

MINDCV_NAME = {"sres18": "resnet18", "sres50": "resnet50"}  # other names are MindCV's own


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


def work_infer(spec, result_path=None):
    ms = quiet_mindspore()
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


def work_train(spec, result_path=None):
    """Step times of several variants of one model, interleaved in this process."""
    ms = quiet_mindspore()
    calls = {v: train_step(ms, spec["model"], v, spec["batch"]) for v in spec["variants"]}
    return interleaved(calls, 2, spec["repeat"])


def work_train_memory(spec, result_path=None):
    """Peak RSS of one variant's training (compile + two steps), alone in this process."""
    ms = quiet_mindspore()
    timed(train_step(ms, spec["model"], spec["variant"], spec["batch"]), 2, 0)
    return {}


def work_make_ckpt(spec, result_path=None):
    """A training-form ACB checkpoint with optimizer state (moments, step, lr) and the ACB layout in its
    metadata, as train.py writes them."""
    quiet_mindspore()
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


def work_pipeline(spec, result_path=None):
    quiet_mindspore()
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


def work_acb_layer(spec, result_path=None):
    ms = quiet_mindspore()
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


def work_step_memory(spec, result_path=None):
    """One training step of the project's train step (64 px, batch 2), alone in this process: in graph mode
    (``spec["mode"] == "graph"``: compilation plus the step) or PyNative mode."""
    ms = quiet_mindspore()
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


#: the rows of the kinds' training table besides the kinds: RepOpt's hyper-search form and its run
REPOPT_ROWS = ("rep-csla", "repopt")


def kind_model(model, kind):
    """The model of ``kind``; ``rep-csla``: rep's constant-scale form; ``repopt``: the plain model (its optimizer
    is :func:`kind_optimizer`'s)."""
    from acnet_ms import create_model

    if kind == "rep-csla":
        return create_model(model, num_classes=1000, block_type="rep", block_options={"csla": True})
    return create_model(model, num_classes=1000, block_type="base" if kind == "repopt" else kind)


def kind_optimizer(ms, model, kind, net):
    """Momentum; for ``repopt``, RepOpt's, with the gains of the model's constant-scale form (their values cost
    nothing: one elementwise product per site kernel whatever they are)."""
    if kind != "repopt":
        return ms.nn.Momentum(net.trainable_params(), 0.01, 0.9)
    from acnet_ms import block_layout
    from acnet_ms.training.repopt import RepOptMomentum, scales_of

    csla = kind_model(model, "rep-csla")
    scales = scales_of({p.name: p.asnumpy() for p in csla.get_parameters()}, block_layout(csla))
    return RepOptMomentum(net.trainable_params(), 0.01, 0.9, scales)  # no weight decay, as every row


def work_kinds_train(spec, result_path=None):
    """Each kind's training step next to base's (interleaved) and their forward multiply-adds."""
    ms = quiet_mindspore()
    import numpy as np

    batch, size = spec["batch"], spec["size"]
    calls, macs = {}, {}
    for kind in spec["kinds"]:
        net = kind_model(spec["model"], kind)
        macs[kind] = count_macs(net, (1, 3, size, size))
        opt = kind_optimizer(ms, spec["model"], kind, net)
        step = ms.nn.TrainOneStepCell(ms.nn.WithLossCell(net, ms.nn.CrossEntropyLoss()), opt)
        step.set_train()
        rng = np.random.default_rng(0)
        x = ms.Tensor(rng.normal(size=(batch, 3, size, size)).astype(np.float32))
        y = ms.Tensor(rng.integers(0, 1000, batch).astype(np.int32))
        calls[kind] = lambda step=step, x=x, y=y: step(x, y).asnumpy()
    return dict(times=interleaved(calls, 2, spec["repeat"]), macs=macs)


def work_kinds_folded(spec, result_path=None):
    """Batch-1 latency of the stock MindCV model holding each kind's folded weights, against the stock model
    with its own weights (round-robin): the folded graph is the stock graph, whatever the kind."""
    ms = quiet_mindspore()
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


def work_onnx(spec, result_path=None):
    """Batch-1 latency of the exported fully folded graph in onnxruntime, next to MindSpore graph mode."""
    ms = quiet_mindspore()
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


def work_int8(spec, result_path=None):
    """Latency of the fully folded graph in onnxruntime, FP32 and INT8 (convert.py --int8's quantization)."""
    quiet_mindspore()
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


WORKERS = {"infer": work_infer, "train": work_train, "train_memory": work_train_memory, "acb_layer": work_acb_layer,
           "make_ckpt": work_make_ckpt, "pipeline": work_pipeline, "step_memory": work_step_memory,
           "kinds_train": work_kinds_train, "kinds_folded": work_kinds_folded, "onnx": work_onnx, "int8": work_int8}


if __name__ == "__main__":
    worker_entry(WORKERS)
