"""Model definitions; importing this package registers them."""
from . import cifar_zoo, resnet, sknet  # noqa: F401  (registers our models; MindCV's come from MindCV)
from .factory import checkpoint_forms, create_model, layout_for, num_classes_of
from .registry import list_models, model_entry

__all__ = ["checkpoint_forms", "create_model", "layout_for", "list_models", "model_entry", "num_classes_of"]
