"""acnet_ms: re-parameterizable CNNs (ACNet and its family) for MindSpore.

The public API, loaded lazily so that the pure-numpy parts
(``acnet_ms.kinds.identities``, ``acnet_ms.io.checkpoint``'s reader) import
without MindSpore:

* models: :func:`create_model`, :func:`list_models`; what became of a
  model's convs: :class:`BuildRecord` (``net.acnet``), :func:`summary_line`,
  :func:`block_summary`, :func:`block_layout`;
* the kind table: :func:`register_kind`, :func:`get_kind`, :func:`kind_names`,
  :class:`BlockKind`, :class:`KindOption`;
* the four training-form Cells: :class:`ACBlock`, :class:`DiverseBranchBlock`,
  :class:`OREPABlock`, :class:`RepBlock`, and :func:`switch_to_deploy`;
* checkpoints: :func:`read_checkpoint`, :func:`write_checkpoint`,
  :func:`fold_state` (a training-form checkpoint dict folded, numpy),
  :func:`convert_checkpoint` (what ``convert.py`` runs).

The names ``acb_summary``, ``acb_layout`` (now :func:`block_summary`,
:func:`block_layout`) and ``block_types`` (``["base"] + kind_names()``)
still work, with a DeprecationWarning.
"""
__version__ = "0.1.0"

from ._moved import install as _install_moved  # noqa: E402  (the modules that moved: acnet_ms/_moved.py)

_install_moved()

_LAZY = {
    "create_model": "acnet_ms.models",
    "list_models": "acnet_ms.models",
    "BuildRecord": "acnet_ms.reparam.record",
    "summary_line": "acnet_ms.reparam.transform",
    "block_summary": "acnet_ms.reparam.transform",
    "block_layout": "acnet_ms.reparam.transform",
    "register_kind": "acnet_ms.kinds",
    "get_kind": "acnet_ms.kinds",
    "kind_names": "acnet_ms.kinds",
    "BlockKind": "acnet_ms.kinds",
    "KindOption": "acnet_ms.kinds",
    "ACBlock": "acnet_ms.kinds.acb.cell",
    "DiverseBranchBlock": "acnet_ms.kinds.dbb.cell",
    "OREPABlock": "acnet_ms.kinds.orepa.cell",
    "RepBlock": "acnet_ms.kinds.rep.cell",
    "switch_to_deploy": "acnet_ms.reparam.switch",
    "read_checkpoint": "acnet_ms.io.checkpoint",
    "write_checkpoint": "acnet_ms.io.checkpoint",
    "fold_state": "acnet_ms.reparam.state",
    "convert_checkpoint": "acnet_ms.convert.pipeline",
}

#: names outside the API that still resolve: {name: (module, its name there)}
_QUIET = {"model_entry": ("acnet_ms.models", "model_entry")}

#: older names: {name: (module, its name there, what to use instead)}
_DEPRECATED = {
    "acb_summary": ("acnet_ms.reparam.transform", "block_summary", "acnet_ms.block_summary"),
    "acb_layout": ("acnet_ms.reparam.transform", "block_layout", "acnet_ms.block_layout"),
    "block_types": ("acnet_ms.kinds", "block_types", "['base'] + acnet_ms.kind_names()"),
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _QUIET:
        module, attr = _QUIET[name]
        return getattr(importlib.import_module(module), attr)
    if name in _DEPRECATED:
        import warnings

        module, attr, instead = _DEPRECATED[name]
        warnings.warn(f"acnet_ms.{name} is deprecated; use {instead}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'acnet_ms' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
