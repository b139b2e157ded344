"""OREPA: online convolutional re-parameterization (Hu et al., CVPR 2022).

``kind`` (registered on import), ``cell`` (the Cell, MindSpore), ``fold`` (numpy)."""
from . import kind  # noqa: F401  (registers the kind)
