"""Re-parameterizable block kinds: the table (:mod:`.base`) and the kinds this package ships.

One kind is one folder, ``kinds/<kind>/``: ``kind.py`` (its options, site rule
and numpy entries / fold / from_plain / infer_options, registered on import),
``cell.py`` (its training-form Cell), ``fold.py`` (its own fold identities,
pure numpy) and, where it has one, ``spec.py``.  What every kind shares sits
beside them: :mod:`.base` (the interface and the table), :mod:`.identities`
(the shared fold identities, pure numpy), :mod:`.cell` and :mod:`.geometry`
(the base Cell's primitives).  ``block_type`` names a kind (or ``base``, the
plain model); see ``docs/models.md`` for how to add one.
"""
from . import acb  # noqa: F401  (registers the ACB kind)
from . import dbb  # noqa: F401  (registers the DBB kind)
from . import orepa  # noqa: F401  (registers the OREPA kind)
from . import rep  # noqa: F401  (registers the rep kind)
from .base import (BASE, BlockKind, KindOption, block_types, check_block, get_kind, kind_names, register_kind,
                   unregister_kind)

__all__ = ["BASE", "BlockKind", "KindOption", "block_types", "check_block", "get_kind", "kind_names",
           "register_kind", "unregister_kind"]
