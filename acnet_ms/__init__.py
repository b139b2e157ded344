"""acnet_ms: re-parameterizable CNNs (ACNet and its family) for MindSpore.

The model and layer API is loaded lazily so that the pure-numpy parts
(``acnet_ms.kinds.identities``) import without MindSpore.
"""
__version__ = "0.1.0"

_LAZY = {
    "create_model": "acnet_ms.models",
    "list_models": "acnet_ms.models",
    "model_entry": "acnet_ms.models",
    "ACBlock": "acnet_ms.kinds.acb.cell",
    "switch_to_deploy": "acnet_ms.reparam.switch",
    "block_summary": "acnet_ms.reparam.transform",
    "block_layout": "acnet_ms.reparam.transform",
    "summary_line": "acnet_ms.reparam.transform",
    "acb_summary": "acnet_ms.reparam.transform",
    "acb_layout": "acnet_ms.reparam.transform",
    "BlockKind": "acnet_ms.kinds",
    "KindOption": "acnet_ms.kinds",
    "register_kind": "acnet_ms.kinds",
    "get_kind": "acnet_ms.kinds",
    "block_types": "acnet_ms.kinds",
    "BuildRecord": "acnet_ms.reparam.record",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'acnet_ms' has no attribute {name!r}")
