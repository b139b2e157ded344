"""DBB: the Diverse Branch Block (Ding et al., CVPR 2021).

``kind`` (registered on import), ``cell`` (the Cell, MindSpore), ``fold`` (numpy)."""
from . import kind  # noqa: F401  (registers the kind)
