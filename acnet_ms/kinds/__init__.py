"""Re-parameterizable block kinds: the table (:mod:`.base`) and the kinds this package ships.

One kind is one folder, ``kinds/<kind>/``: ``kind.py`` (its options, site rule
and numpy entries / fold / from_plain / infer_options, registered on import),
``cell.py`` (its training-form Cell), ``fold.py`` (its own fold identities,
pure numpy) and, where it has one, ``spec.py``.  What every kind shares sits
beside them: :mod:`.base` (the interface, and ``BranchBNKind``
for kinds whose branches end in BNs), :mod:`.table` (the table of kinds, and the loading of kinds from
other packages), :mod:`.identities` (the shared fold
identities, pure numpy), :mod:`.cell` (the base Cell ``ReparamBlock``: geometry,
the three forms, the switch to one conv ``fused_conv``) and :mod:`.geometry`
(branch windows and padding).  ``block_type`` names a kind (or ``base``, the
plain model); see ``docs/models.md`` for how to add one.  A *native*
kind (``repvgg``: MindCV's RepVGG blocks) is a model's own blocks, folded through the
same table but never a ``block_type``.
"""
from . import acb  # noqa: F401  (registers the ACB kind)
from . import dbb  # noqa: F401  (registers the DBB kind)
from . import orepa  # noqa: F401  (registers the OREPA kind)
from . import rep  # noqa: F401  (registers the rep kind)
from . import repvgg  # noqa: F401  (registers MindCV's RepVGG blocks: a native kind, no block type)
from .base import BASE, BlockKind, KindOption, NativeKind
from .table import block_types, check_block, get_kind, kind_names, register_kind, unregister_kind

__all__ = ["BASE", "BlockKind", "KindOption", "NativeKind", "block_types", "check_block", "get_kind", "kind_names",
           "register_kind", "unregister_kind"]
