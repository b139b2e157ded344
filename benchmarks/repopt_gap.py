"""How far RepOpt's one-conv training strays from its constant-scale form, per optimizer.

    python benchmarks/repopt_gap.py [--model src20] [--steps 30] [--size 16]

The constant-scale model (block_type rep, csla, random gains held fixed) and the plain model started at its
fold (``acnet_ms.training.repopt.start_plain``) take the same steps through the run's own train step
(``build_train_step``: the plain one with RepOpt's gradients), on the same random batches.  For each optimizer
it prints, after the steps, the gap between the plain model's site kernels and the constant-scale model's fold,
relative to how far the steps moved them (0: the same training; 1: as far apart as the training went), and the
largest logit difference on a held-out batch, relative to the largest logit.  SGD with momentum is exact up to
float32 rounding; Adam-family updates and gradient clipping are not linear in the gradient, so the rule does not
carry over to them: these figures say by how much.  CPU, PyNative.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CASES = [("momentum", {}), ("momentum", {"use_nesterov": True}), ("sgd", {}),
         ("momentum", {"clip_grad": True, "clip_value": 1.0}), ("adamw", {"lr": 0.001}), ("adam", {"lr": 0.001})]


def run_case(model, steps, size, opt, extra, seed=0):
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor

    from acnet_ms import create_model
    from acnet_ms.config.loader import defaults
    from acnet_ms.reparam.forms import STOCK, Forms
    from acnet_ms.reparam.transform import block_layout
    from acnet_ms.training.factories import build_train_step
    from acnet_ms.training.loop import train_call
    from acnet_ms.training.repopt import fix_gains, gain_parameters, scales_of, start_plain

    ms.set_seed(seed)
    csla = create_model(model, num_classes=10, block_type="rep", block_options={"csla": True})
    rng = np.random.default_rng(seed)
    for gains in gain_parameters(csla).values():
        for gain in gains:
            gain.set_data(Tensor(rng.uniform(0.4, 1.4, gain.shape).astype(np.float32)))
    layout = block_layout(csla)
    scales = scales_of({p.name: p.asnumpy() for p in csla.get_parameters()}, layout)
    fix_gains(csla, scales)
    plain = create_model(model, num_classes=10)
    start_plain(plain, csla)
    start = {name: p.asnumpy().copy() for name, p in plain.parameters_dict().items() if name in scales}
    cfg = dict(defaults(), device_target="CPU", model=model, opt=opt, weight_decay=1e-4, lr=0.05,
               repopt_scales="search.ckpt")
    cfg.update(extra)
    batches = [(Tensor(rng.normal(size=(8, 3, size, size)).astype(np.float32)),
                Tensor(rng.integers(0, 10, 8).astype(np.int32))) for _ in range(steps)]
    for net, repopt in ((csla, None), (plain, scales)):
        step, _ = build_train_step(net, cfg, [cfg["lr"]] * steps, repopt=repopt)
        for x, y in batches:
            train_call(step, x, y, True, cfg)
    folded = Forms(layout).move({p.name: p.asnumpy() for p in csla.get_parameters()}, STOCK).state
    trained = plain.parameters_dict()
    gap = max(np.linalg.norm(trained[n].asnumpy() - folded[n]) / max(np.linalg.norm(folded[n] - start[n]), 1e-12)
              for n in scales)
    probe = Tensor(rng.normal(size=(8, 3, size, size)).astype(np.float32))
    csla.set_train(False)
    plain.set_train(False)
    a, b = csla(probe).asnumpy(), plain(probe).asnumpy()
    return gap, float(np.abs(a - b).max() / np.abs(a).max())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="src20")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--size", type=int, default=16)
    args = parser.parse_args(argv)
    import mindspore as ms

    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    print(f"{args.model}, {args.steps} steps of batch 8 at {args.size}x{args.size}, weight decay 1e-4\n")
    print("| optimizer | options | kernel gap ÷ distance trained (worst conv) | max logit difference ÷ max logit |")
    print("|---|---|---|---|")
    for opt, extra in CASES:
        gap, logits = run_case(args.model, args.steps, args.size, opt, extra)
        words = ", ".join(f"{k} {v}" for k, v in extra.items()) or "lr 0.05"
        print(f"| {opt} | {words} | {gap:.2e} | {logits:.2e} |")


if __name__ == "__main__":
    main()
