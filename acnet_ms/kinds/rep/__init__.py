"""rep: RepVGG / MobileOne-style branches (Ding et al., CVPR 2021; Vasu et al., CVPR 2023).

``kind`` (registered on import), ``cell`` (the Cell, MindSpore), ``fold`` (numpy)."""
from . import kind  # noqa: F401  (registers the kind)
