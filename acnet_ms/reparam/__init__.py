"""Whole networks: trace a model's conv -> BN structure, put blocks in (``transform``), switch them to
their deploy form (``switch``), the build record (``record``), and the same on checkpoint dicts (``state``,
pure numpy)."""
