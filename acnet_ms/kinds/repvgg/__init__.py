"""MindCV's own RepVGG blocks: ``state`` (their checkpoint entries and fold, numpy), ``blocks`` (the model's
Cells to their deploy form)."""
