"""Checkpoint conversion (``pipeline``: fold, check against the stock model, write, export) and INT8
(``quantize``)."""
