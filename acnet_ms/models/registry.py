"""The table of models: every model is defined once, in its plain (``base``) form.

The table holds the networks written here and every model of MindCV
(``mindcv.list_models()``); where a network written here is MindCV's
(``mindcv=`` at registration: the same names, shapes and function), MindCV's
name builds ours.  Building, with a block kind or fully folded, is
:mod:`acnet_ms.models.factory`'s.
"""
from dataclasses import dataclass, replace
from typing import Callable, Optional


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


def model_hint(path=None):
    """Where to find a model name, for an error: the models whose names are closest to the file name of
    ``path`` (if any), and how to list them all (``python -m acnet_ms.models``)."""
    import difflib
    import os

    names = list_models()
    close = []
    if path:
        stem = os.path.splitext(os.path.basename(str(path)))[0].lower()
        for word in dict.fromkeys((stem, stem.split("-")[0], stem.split("_")[0])):
            close += [n for n in difflib.get_close_matches(word, names, n=3, cutoff=0.6) if n not in close]
    near = f"closest to the file's name: {', '.join(close[:3])}; " if close else ""
    return f"{near}python -m acnet_ms.models lists all {len(names)}"


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
