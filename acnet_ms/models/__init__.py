"""Model definitions; importing this package registers them."""
from . import resnet, sknet  # noqa: F401  (registers the ResNets and SK-ResNets)
from .registry import create_model, list_models, model_entry

__all__ = ["create_model", "list_models", "model_entry"]
