"""repvgg: MindCV's own RepVGG blocks, a native kind (never a ``block_type``).

``kind`` (registered on import), ``state`` (their checkpoint entries and fold, numpy), ``blocks`` (the
model's Cells to their deploy form, MindSpore)."""
from . import kind  # noqa: F401  (registers the kind)
