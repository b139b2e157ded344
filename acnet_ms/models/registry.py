"""One registry that builds every model for every entry point.

Every model is defined once, in its plain (``base``) form: the networks
written here and every model of MindCV (``mindcv.list_models()``); where a
network written here is MindCV's (``mindcv=`` at registration: the same names,
shapes and function), MindCV's name builds ours.  The ACB
form and the fully folded form are made from it by
:mod:`acnet_ms.transform`, which learns the conv/BN structure from the
network itself, so any CNN gets them the same way.
"""
from dataclasses import dataclass, replace
from typing import Callable, Optional

from .. import fold
from ..cli import first_line

BLOCK_TYPES = ("base", "acb")

#: input sizes tried, in order, when tracing a model's structure (small first: it is faster)
TRACE_SIZES = (64, 224, 299)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable
    family: str                 # "imagenet" (224 x 224 input) or "cifar" (32 x 32 input)
    num_classes: int            # default number of classes
    mindcv: Optional[str]       # MindCV model whose checkpoints the base form shares, if any

    @property
    def input_size(self):
        return 32 if self.family == "cifar" else 224


_REGISTRY = {}


def register_model(family, num_classes=1000, mindcv=None):
    """Decorator: register ``fn(num_classes=..., **kwargs) -> nn.Cell`` (a plain model) under its name;
    ``mindcv`` names the MindCV model it equals (names, shapes, function), if any."""
    def wrap(fn):
        _REGISTRY[fn.__name__] = ModelEntry(fn.__name__, fn, family, num_classes, mindcv)
        return fn
    return wrap


def _mindcv_models():
    from mindcv.models.registry import list_models as mindcv_list

    return set(mindcv_list())


def _mindcv_builder(name):
    def build(num_classes=1000, **kwargs):
        from mindcv.models import create_model as mindcv_create

        return mindcv_create(name, num_classes=num_classes, **kwargs)
    return build


def list_models():
    """Names of all models, ours and MindCV's, sorted."""
    return sorted(set(_REGISTRY) | _mindcv_models())


def model_entry(name):
    """The :class:`ModelEntry` of ``name``; ValueError suggesting close names otherwise."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    twins = [e for e in _REGISTRY.values() if e.mindcv == name]
    if twins:  # one implementation per network: ours, where it is MindCV's network (names, shapes, function)
        return replace(twins[0], name=name)
    if name in _mindcv_models():
        return ModelEntry(name, _mindcv_builder(name), "imagenet", 1000, name)
    import difflib

    close = difflib.get_close_matches(str(name), list_models(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; ours: {', '.join(sorted(_REGISTRY))}"
    raise ValueError(f"unknown model {name!r} (neither ours nor MindCV's{hint})")


def check_block_type(block_type, deploy=False):
    if block_type not in BLOCK_TYPES:
        raise ValueError(f"block_type must be one of {', '.join(BLOCK_TYPES)}, got {block_type!r}")
    if deploy and block_type != "base":
        raise ValueError(f"deploy=True builds the fully folded form (convs with bias, no BN, no ACB): "
                         f"block_type must be 'base', got {block_type!r}")


def check_acb_options(branches, branch_bn, position):
    if branches not in fold.BRANCH_SETS:
        raise ValueError(f"acb_branches must be one of {', '.join(fold.BRANCH_SETS)}, got {branches!r}")
    if not isinstance(branch_bn, bool):
        raise ValueError(f"acb_branch_bn must be True or False, got {branch_bn!r}")
    if position not in fold.POSITIONS:
        raise ValueError(f"acb_position must be one of {', '.join(fold.POSITIONS)}, got {position!r}")


_SITES = {}


def structure(name, net, kwargs):
    """The traced conv/BN structure (``transform.trace``) of model ``name`` built as ``net`` with
    ``kwargs`` (cached per process: the structure does not depend on the weights)."""
    from ..transform import trace

    in_channels = kwargs.get("in_channels", 3)
    key = (name, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
    if key not in _SITES:
        sizes = (32,) if model_entry(name).family == "cifar" else TRACE_SIZES
        errors = []
        for size in sizes:
            try:
                _SITES[key] = trace(net, (1, in_channels, size, size))
                break
            except (RuntimeError, ValueError, TypeError, AssertionError) as err:  # models assert their input size
                errors.append(f"{size}x{size}: {first_line(err)}")
        else:
            raise ValueError(f"{name}: cannot run a forward pass to learn its structure ({'; '.join(errors)})")
    return _SITES[key]


def create_model(name, num_classes=None, block_type="base", deploy=False, gamma_init=None, acb_branches="hv",
                 acb_branch_bn=True, acb_position="center", **kwargs):
    """Build model ``name`` (ours or MindCV's).

    Args:
        num_classes: classifier outputs; ``None`` takes the model's default
            (1000 for the ImageNet models, 10 for the CIFAR ones).
        block_type: ``"base"`` (the plain model; for MindCV names exactly
            MindCV's) or ``"acb"`` (every square k x k conv with 1 < k < 7 an ACB
            where the model allows it; :func:`acnet_ms.acb_summary` tells which).
        deploy: the fully folded inference form of the base model: every
            conv + BN is one conv with bias under the conv's name, every BN
            slot an ``nn.Identity`` (``convert.py --fold_bn`` writes its
            checkpoints).  Needs ``block_type="base"``; ValueError otherwise.
        gamma_init, acb_branches, acb_branch_bn, acb_position: the ACBs' options
            (see :class:`acnet_ms.ACBlock`: ``gamma_init``, ``branches``,
            ``branch_bn``, ``position``).
        **kwargs: passed to the model (``in_channels``, MindCV's ``drop_rate``, ...).
    """
    entry = model_entry(name)
    check_block_type(block_type, deploy)
    check_acb_options(acb_branches, acb_branch_bn, acb_position)
    if num_classes is None:
        num_classes = entry.num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    net = entry.builder(num_classes=num_classes, **kwargs)
    object.__setattr__(net, "_acnet_spec", dict(model=name, num_classes=num_classes, **kwargs))
    if block_type == "base" and not deploy:
        return net
    from ..transform import summary_line, to_acb, to_fused

    sites = structure(name, net, dict(kwargs, num_classes=num_classes))
    if deploy:
        pairs = to_fused(net, sites)
        object.__setattr__(net, "_fused_pairs", pairs)
        return net
    to_acb(net, sites, gamma_init=gamma_init, branches=acb_branches, branch_bn=acb_branch_bn,
           position=acb_position)
    if not net._acb_report["acbs"]:
        raise ValueError(f"{name} has no k x k conv that can become an ACB ({summary_line(net)}); "
                         f"use block_type 'base'")
    return net
