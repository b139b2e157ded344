"""One registry that builds every model for every entry point."""
from dataclasses import dataclass
from typing import Callable, Optional

from ..layers.conv_bn import check_block_type


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
    """Decorator: register ``fn(**kwargs) -> nn.Cell`` under its function name."""
    def wrap(fn):
        _REGISTRY[fn.__name__] = ModelEntry(fn.__name__, fn, family, num_classes, mindcv)
        return fn
    return wrap


def list_models():
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def model_entry(name):
    """The :class:`ModelEntry` of ``name``; ValueError listing the known models otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(name, num_classes=None, block_type="base", deploy=False, **kwargs):
    """Build model ``name``.

    Args:
        num_classes: classifier outputs; ``None`` takes the model's default
            (1000 for the ImageNet models, 10 for the CIFAR ones).
        block_type: ``"base"`` (plain conv + BN) or ``"acb"`` (ACBs in every
            k x k conv + BN slot with 1 < k < 7).
        deploy: the fully folded inference form of the base model: every
            conv + BN is one conv with bias under the conv's name, every BN
            slot an ``nn.Identity`` (``convert.py --fold_bn`` writes its
            checkpoints).  Needs ``block_type="base"``; ValueError otherwise.
        **kwargs: passed to the model (``gamma_init``, ``in_channels``).
    """
    entry = model_entry(name)
    check_block_type(block_type, deploy)
    if num_classes is None:
        num_classes = entry.num_classes
    return entry.builder(num_classes=num_classes, block_type=block_type, deploy=deploy, **kwargs)
