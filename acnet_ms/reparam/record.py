"""The public record a built network carries: ``net.acnet``."""
from dataclasses import dataclass, field
from typing import Optional


@dataclass
class BuildRecord:
    """How a network was built, and what became of its convs (``net.acnet``).

    ``model``, ``num_classes`` and ``kwargs`` are what ``create_model`` was
    given (``None`` for a network transformed by hand); ``block_type`` and
    ``block_options`` (defaults filled in) say which block kind it carries;
    ``blocks`` maps each block's cell path to where its fold goes
    (``slot``: ``"bn"``/``"bias"``/``"none"``, ``bn``: the BN slot's parameter
    prefix, ``bn_cell``: its cell path, ``prefix``: the block's parameter
    prefix); ``plain`` maps each k x k conv that stayed plain to the reason;
    ``fused_pairs`` lists the ``(conv, bn, eps)`` pairs of the fully folded
    form (``deploy=True``); ``native_blocks`` the model's own
    re-parameterizable blocks (of a native kind) that form runs as single
    convs: their :class:`~acnet_ms.reparam.layout.Layout` (``{parameter prefix: Block}``).
    """
    model: Optional[str] = None
    num_classes: Optional[int] = None
    kwargs: dict = field(default_factory=dict)
    block_type: str = "base"
    block_options: dict = field(default_factory=dict)
    blocks: dict = field(default_factory=dict)
    plain: dict = field(default_factory=dict)
    fused_pairs: list = field(default_factory=list)
    native_blocks: dict = field(default_factory=dict)


def record_of(net):
    """``net.acnet``, or an empty record for a network built elsewhere."""
    return getattr(net, "acnet", None) or BuildRecord()


def set_record(net, record):
    """Attach ``record`` as ``net.acnet`` (outside MindSpore's Cell attribute handling)."""
    object.__setattr__(net, "acnet", record)
    return record
