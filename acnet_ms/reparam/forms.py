"""The forms of a model's checkpoint, and the one call that moves a checkpoint from one to another.

    training   the blocks of a kind at the model's conv sites (what train.py trains)
    stock      the plain model: the checkpoint stock MindCV loads (a model's own blocks, MindCV's
               RepVGG's, in their training form, as the stock model has them)
    deploy     the fully folded model (``create_model(..., deploy=True)``): every block and every one of
               the model's own blocks one conv, every BatchNorm that follows a conv folded into it

:class:`Forms` holds what the moves of one model read: the layout of its blocks (where each folds,
:class:`~acnet_ms.reparam.layout.Layout`), the layout of its own blocks (a native kind's) and the
conv + BN pairs of its deploy form.  :meth:`Forms.move` takes a checkpoint in whatever form it is to
``training``, ``stock`` or ``deploy``; the model loader, evaluation, convert.py, the analyses and the
``.pth`` import each call it, with the Forms their model gives
(:func:`acnet_ms.models.factory.checkpoint_forms`, :func:`acnet_ms.reparam.transform.network_forms`).
The name mapping is :mod:`.state`, the arithmetic the kinds'.

This module must not import MindSpore.
"""
from dataclasses import dataclass, field

from . import state as state_map
from .layout import Layout, as_layout

TRAINING, STOCK, DEPLOY = "training", "stock", "deploy"
FORMS = (TRAINING, STOCK, DEPLOY)


@dataclass(frozen=True)
class Moved:
    """A checkpoint moved to a form: its arrays, and what the move folded or built."""
    state: dict
    blocks: list = field(default_factory=list)   # the blocks folded (to stock) or built from plain convs
    own: list = field(default_factory=list)      # the model's own blocks folded into one conv each
    bns: list = field(default_factory=list)      # the (conv, bn[, eps]) pairs folded


@dataclass(frozen=True)
class Forms:
    """What moving one model's checkpoint between its forms reads (see the module's docstring).

    ``blocks``: the layout of the training form's blocks (a checkpoint's, as it records it or as its model
    builds them); ``native``: the model's own blocks; ``pairs``: the deploy form's ``(conv, bn, eps)``.
    Each is a :class:`Layout` (a dict of the earlier schema is read as one) or a list.
    """
    blocks: Layout = field(default_factory=Layout)
    native: Layout = field(default_factory=Layout)
    pairs: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "blocks", as_layout(self.blocks))
        object.__setattr__(self, "native", as_layout(self.native))
        object.__setattr__(self, "pairs", tuple(tuple(p) for p in self.pairs))

    def move(self, state, to, network=None):
        """``state`` (name -> array, any form) in the form ``to``, as a :class:`Moved`; optimizer and trainer
        entries dropped (``network``: the model's own names in training form, for the move to stock; see
        :func:`~acnet_ms.reparam.state.trainer_entries`).  ValueError naming the block or entry that does
        not fit.

        * ``stock``: the blocks ``state`` holds folded where :attr:`blocks` says (a block it does not
          know is an error);
        * ``training``: each plain conv of :attr:`blocks` turned into its block computing the same
          function (the kind's ``from_plain``); blocks already there stay;
        * ``deploy``: to stock, then the model's own blocks folded into one conv each, then every pair
          of :attr:`pairs` whose BatchNorm ``state`` still holds folded into its conv.
        """
        if to not in FORMS:
            raise ValueError(f"a checkpoint's form is one of {', '.join(FORMS)}, got {to!r}")
        if to == TRAINING:
            return Moved(state_map.plain_to_blocks(state_map.network_entries(state), self.blocks),
                         blocks=list(self.blocks))
        blocks = []
        if state_map.block_prefixes(state):
            state, blocks = state_map.fold_state(state, self.blocks, network=network)
        else:
            state = state_map.network_entries(state, network)
        if to == STOCK:
            return Moved(state, blocks=blocks)
        own, bns = [], []
        if self.native and state_map.find_blocks(state, native=True):
            state, own = state_map.fold_state(state, self.native)
        present = [p for p in self.pairs if f"{p[1]}.gamma" in state]
        if present:
            state, bns = state_map.fold_bns(state, present)
        return Moved(state, blocks=blocks, own=own, bns=bns)
