"""RepOpt training (Ding et al., "Re-parameterizing Your Optimizers rather than Architectures", ICLR 2023): the
plain model trained as its constant-scale rep form would be, at the plain model's cost.

The constant-scale form (``block_type rep``, ``block_options {csla: true}``) runs each rep site as bare branches
times per-channel gains.  Trained with its gains (the *hyper-search* run), it learns them; with the gains held
fixed, SGD on its branches moves the folded kernel exactly as SGD on ONE conv with a gradient multiplier and a
shifted weight decay (:mod:`acnet_ms.kinds.rep.repopt`, the algebra).  This module is that one-conv training:

* :func:`read_scales`: a hyper-search checkpoint's gains, per plain conv (:class:`Scales`);
* :func:`fix_gains`: a constant-scale model's gains set and held fixed (the multi-branch reference);
* :func:`start_plain`: the plain model where the constant-scale model starts (the rule of initialization);
* :class:`RepOptGradients`: the gradients of the plain model's site kernels as the branches' SGD sees them
  (the rule of iteration), for any MindSpore optimizer;
* :class:`RepOptMomentum`: ``nn.Momentum`` with it built in.

``train.py --repopt_scales <hyper-search checkpoint>`` runs all of it (docs/repopt.md).
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.ops import functional as F

from ..kinds.rep import repopt as rules

__all__ = ["Scales", "scales_of", "read_scales", "gain_parameters", "fix_gains", "start_plain", "weight_decays",
           "RepOptGradients", "RepOptMomentum", "LINEAR_OPTIMIZERS"]


@dataclass(frozen=True)
class Scales:
    """One constant-scale site's gains (per output channel): the k x k branches', the 1 x 1 branch's and the
    identity's (``None`` where the site has no such branch)."""
    dense: Tuple[np.ndarray, ...]
    scale: Optional[np.ndarray] = None
    identity: Optional[np.ndarray] = None

    def multiplier(self, shape):
        """The gradient multiplier M of a kernel of ``shape`` (:func:`acnet_ms.kinds.rep.repopt.grad_multiplier`)."""
        return rules.grad_multiplier(shape, self.dense, self.scale)

    def anchor(self, shape):
        """Where the weight decay pulls the kernel: ``g_id I`` (:func:`acnet_ms.kinds.rep.repopt.decay_anchor`)."""
        return rules.decay_anchor(shape, self.identity)


def scales_of(state, layout):
    """``{plain conv weight name: Scales}`` of the constant-scale rep blocks of ``layout`` in checkpoint dict
    ``state`` (numpy); ValueError when it has none."""
    from ..reparam.layout import as_layout

    out = {}
    for prefix, info in as_layout(layout).items():
        if info["kind"] == "rep" and info["csla"]:
            dense, scale, identity = rules.gains_of(state, prefix, info)
            out[f"{prefix}.weight"] = Scales(tuple(dense), scale, identity)
    if not out:
        raise ValueError("no constant-scale rep block (a hyper-search run trains block_type rep with "
                         "block_options {csla: true})")
    return out


def read_scales(path):
    """``(scales, meta)``: the gains of a hyper-search checkpoint (:func:`scales_of`) and its metadata;
    ValueError naming the file when it is not one."""
    from ..io.checkpoint import read_checkpoint
    from ..models.factory import layout_for
    from ..reparam.state import network_entries

    arrays, meta = read_checkpoint(path)
    state = network_entries(arrays)
    model = meta.get("model")
    if not model:
        raise ValueError(f"{path}: records no model; a hyper-search checkpoint is one train.py wrote")
    try:
        layout = layout_for(model, meta.get("num_classes"), meta, state=state)
        return scales_of(state, layout), meta
    except (KeyError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None


def gain_parameters(net):
    """The gains of a constant-scale model's blocks: ``{block prefix: [Parameter, ...]}`` (k x k, 1 x 1,
    identity)."""
    from ..kinds.cell import param_prefix
    from ..reparam.switch import reparam_blocks

    return {param_prefix(block, name): block.gains() for name, block in reparam_blocks(net)
            if getattr(block, "csla", False)}


def fix_gains(net, scales=None):
    """Hold a constant-scale model's gains fixed (no gradient, so no optimizer moves them), set from
    ``scales`` (:func:`read_scales`'s, keyed by the plain conv's weight name) if given.  Returns ``net``."""
    blocks = gain_parameters(net)
    if not blocks:
        raise ValueError("the network has no constant-scale rep block (block_type rep, block_options {csla: true})")
    unused = sorted(set(scales or ()) - {f"{prefix}.weight" for prefix in blocks})
    if unused:
        raise ValueError(f"the scales name {unused[0]}, which is no constant-scale block's conv of the network")
    for prefix, gains in blocks.items():
        if scales is not None:
            site = scales.get(f"{prefix}.weight")
            if site is None:
                raise ValueError(f"block '{prefix}': the scales have none for its conv")
            values = list(site.dense) + [v for v in (site.scale, site.identity) if v is not None]
            if len(values) != len(gains):
                raise ValueError(f"block '{prefix}': {len(gains)} branches, the scales give {len(values)} gains")
            for gain, value in zip(gains, values):
                gain.set_data(Tensor(np.asarray(value, np.float32).reshape(gain.shape)))
        for gain in gains:
            gain.requires_grad = False
    return net


def start_plain(plain_net, csla_net):
    """Set ``plain_net`` (the plain model) to the fold of ``csla_net`` (the same model in its constant-scale
    form): the rule of initialization, so that both compute the same function and train alike.  Returns the
    names set."""
    from ..reparam.forms import STOCK, Forms
    from ..reparam.transform import block_layout

    state = {p.name: p.asnumpy() for p in csla_net.get_parameters()}
    stock = Forms(block_layout(csla_net)).move(state, STOCK).state
    params = {p.name: p for p in plain_net.get_parameters()}
    missing = sorted(set(params) - set(stock))
    if missing:
        raise ValueError(f"the constant-scale model has no entry for the plain model's {missing[0]}")
    for name, param in params.items():
        param.set_data(Tensor(np.asarray(stock[name]).astype(param.asnumpy().dtype)))
    return sorted(params)


def weight_decays(optimizer):
    """Each of ``optimizer``'s parameters' weight decay (0 where it applies none), as floats."""
    flags = optimizer.decay_flags
    if optimizer.is_group:
        values = optimizer.group_weight_decay
    else:
        values = [optimizer.weight_decay] * len(flags)
    out = []
    for value, flag in zip(values, flags):
        if isinstance(value, nn.Cell):
            raise ValueError("a weight decay that changes over the steps: RepOpt's decay anchor needs a fixed one")
        out.append(float(value.asnumpy() if isinstance(value, Tensor) else value) if flag else 0.0)
    return out


def _grad_terms(params, scales, decays):
    """Per parameter: (is a site, M, lam * anchor) as float32 arrays (scalars where not a site)."""
    names = {p.name for p in params}
    unknown = sorted(set(scales) - names)
    if unknown:
        raise ValueError(f"the scales name {unknown[0]}, which is no trained parameter of the network")
    flags, mults, offsets = [], [], []
    for param, decay in zip(params, decays):
        site = scales.get(param.name)
        if site is None:
            flags.append(False)
            mults.append(np.float32(1.0))
            offsets.append(np.float32(0.0))
            continue
        shape = tuple(param.shape)
        flags.append(True)
        # M is the same for every input channel: one (O, 1, k, k) row per output channel, broadcast over the
        # inputs, so the step reads the gradient and little else
        mults.append(site.multiplier(shape[:1] + (1,) + shape[2:]).astype(np.float32))
        offsets.append((decay * site.anchor(shape)).astype(np.float32) if decay and site.identity is not None
                       else np.float32(0.0))
    return tuple(flags), mults, offsets


_iterate = ops.MultitypeFuncGraph("repopt_iterate")


@_iterate.register("Bool", "Tensor", "Tensor", "Tensor")
def _iterate_one(site, multiplier, offset, grad):
    if site:
        if F.dtype(grad) != F.dtype(multiplier):  # float32 gradients, as the parameters are: no cast
            multiplier, offset = F.cast(multiplier, F.dtype(grad)), F.cast(offset, F.dtype(grad))
        return grad * multiplier - offset
    return grad


class RepOptGradients(nn.Cell):
    """``grads -> grads`` with each site kernel's gradient G replaced by ``M (.) G - lam g_id I``.

    Given to an SGD-with-momentum optimizer whose weight decay ``lam`` adds ``lam W'``, the update of each site
    kernel W' is the one its constant-scale branches would make (:mod:`acnet_ms.kinds.rep.repopt`).
    ``params``: the optimizer's parameters, in its order; ``scales``: ``{weight name: Scales}``; ``decays``:
    each parameter's weight decay (:func:`weight_decays`).  A parameter the scales do not name keeps its
    gradient."""

    def __init__(self, params, scales, decays=None):
        super().__init__()
        params = list(params)
        decays = [0.0] * len(params) if decays is None else list(decays)
        flags, mults, offsets = _grad_terms(params, scales, decays)
        self.sites = flags
        self.multipliers = tuple(Tensor(m, ms.float32) for m in mults)
        self.offsets = tuple(Tensor(o, ms.float32) for o in offsets)
        self.hyper_map = ops.HyperMap()

    def construct(self, grads):
        return self.hyper_map(_iterate, self.sites, self.multipliers, self.offsets, grads)


class RepOptMomentum(nn.Momentum):
    """``nn.Momentum`` (SGD with momentum, weight decay, Nesterov) applying :class:`RepOptGradients` of
    ``scales`` first: the RepOpt optimizer of the plain model.  The other arguments are ``nn.Momentum``'s."""

    def __init__(self, params, learning_rate, momentum, scales, weight_decay=0.0, loss_scale=1.0,
                 use_nesterov=False):
        super().__init__(params, learning_rate, momentum, weight_decay=weight_decay, loss_scale=loss_scale,
                         use_nesterov=use_nesterov)
        self.repopt = RepOptGradients(self.parameters, scales, weight_decays(self))

    def decay_weight(self, gradients):
        # nn.Momentum's construct (compiled whole, in PyNative too) calls this first: the rule of iteration
        # goes here, before the weight decay adds lam W'
        return nn.Momentum.decay_weight(self, self.repopt(gradients))


# ------------------------------------------------------------------ train.py --repopt_scales

#: the optimizers whose update is linear in the gradient: RepOpt's rule is exact for them
LINEAR_OPTIMIZERS = ("momentum", "sgd", "nesterov")


def check_run(cfg):
    """A RepOpt run's options checked before anything is built (``cfg``: a dict of the options, changed in
    place: the run trains the plain model, ``block_type`` base).  UserError naming the file or option."""
    import os

    from .. import kinds
    from ..cli import UserError

    path = cfg["repopt_scales"]
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such checkpoint file (repopt_scales)")
    try:
        _, meta = read_scales(path)
    except ValueError as err:
        raise UserError(f"repopt_scales {err}") from None
    if meta["model"] != cfg["model"]:
        raise UserError(f"{path}: the gains of a {meta['model']} (repopt_scales), but this run trains {cfg['model']}")
    if cfg["block_type"] not in (kinds.BASE, "rep"):
        raise UserError(f"option 'repopt_scales' trains the plain {cfg['model']}: block_type must be base (or rep, "
                        f"the hyper-search's), got {cfg['block_type']}")
    cfg["block_type"], cfg["block_options"] = kinds.BASE, None
    return cfg


def start_run(cfg, net, log):
    """The scales of a RepOpt run (``{weight name: Scales}``, for :func:`build_train_step`), and ``net`` (the plain
    model) set where its constant-scale form starts unless the run resumes or starts from ``ckpt_path``."""
    from ..cli import UserError
    from ..engine.runtime import build_model
    from ..models.factory import recorded_block

    path = cfg["repopt_scales"]
    scales, meta = read_scales(path)
    block_type, options = recorded_block(meta)
    log(f"RepOpt: the plain {cfg['model']} trains as its constant-scale form with the gains of {path} would, "
        f"{len(scales)} convs under gradient multipliers (docs/repopt.md)")
    if cfg["opt"] not in LINEAR_OPTIMIZERS:
        log(f"warning: opt {cfg['opt']}: RepOpt's rule is exact for SGD with momentum only; with {cfg['opt']} the "
            f"multipliers are a heuristic (docs/repopt.md measures the gap)")
    if cfg["clip_grad"]:
        log("warning: clip_grad clips the one conv's gradients, not the branches': the steps are no longer the "
            "constant-scale form's (docs/repopt.md)")
    if cfg["resume"]:
        return scales
    if cfg["ckpt_path"]:
        log(f"RepOpt: the weights start from {cfg['ckpt_path']}, not at the constant-scale form's initial fold")
        return scales
    csla = build_model(dict(cfg, block_type=block_type, block_options=options))
    try:
        fix_gains(csla, scales)
        start_plain(net, csla)
    except ValueError as err:
        raise UserError(f"repopt_scales {path}: {err}") from None
    return scales
