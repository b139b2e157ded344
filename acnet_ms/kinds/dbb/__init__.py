"""DBB: the Diverse Branch Block (Ding et al., CVPR 2021).

``kind`` (registered on import), ``cell`` (the Cell, MindSpore), ``fold`` (numpy)."""
from . import kind  # noqa: F401  (registers the kind)
from ..._moved import moved_attr as _moved_attr


# the names this module had before the package was laid out by role (acnet_ms/_moved.py)
__getattr__ = _moved_attr(__name__)
