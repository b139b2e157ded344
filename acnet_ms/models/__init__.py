"""Model definitions; importing this package registers them."""
from . import cifar_zoo, resnet, sknet  # noqa: F401  (registers our models; MindCV's come from MindCV)
from .registry import create_model, list_models, model_entry

__all__ = ["create_model", "list_models", "model_entry"]
