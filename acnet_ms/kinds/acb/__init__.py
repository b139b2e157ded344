"""ACB: ACNet's Asymmetric Convolution Block (Ding et al., ICCV 2019).

``kind`` (registered on import), ``cell`` (the Cell, MindSpore), ``fold`` (numpy)."""
from . import kind  # noqa: F401  (registers the kind)
