"""The repvgg kind: MindCV's own RepVGG blocks (``repvgg_a0`` ... ``repvgg_b3``), a native kind.

MindCV's RepVGG network is built of re-parameterizable blocks already
(``RepVGGBlock``: ``rbr_dense``, ``rbr_1x1``, ``rbr_identity``; deploy form
``rbr_reparam``), so this kind is no ``block_type``: it takes no plain conv of
another model.  It says where a model's own blocks are and what they fold
into, so that the factory (``create_model(..., deploy=True)``), the
converter, evaluation and the checkpoint adapter find, fold and check them
through the kind table like the blocks of every other kind.  The numpy side
is :mod:`.state`, the model side (MindSpore) :mod:`.blocks`.

This module must not import MindSpore.
"""
from ..base import NativeKind
from ..table import register_kind
from . import state


class RepVGGKind(NativeKind):
    name = state.KIND
    label = "RepVGG block"
    family = "repvgg"
    marker = state.MARKER
    slot_words = {"bias": "deploy conv"}
    layout_defaults = {"identity": False, "eps": {}}

    # -------------------------------------------------------------- checkpoints (numpy)

    def entries(self, prefix, info):
        return state.entries(prefix, info)

    def folded_names(self, prefix, info):
        return tuple(state.deploy_entries(prefix))

    def fold(self, state_dict, prefix, info):
        self.check_complete(state_dict, self.entries(prefix, info), prefix)
        kernel, bias = state.fold_block(state_dict, prefix, info)
        return kernel, bias, self.entries(prefix, info)

    def from_plain(self, state_dict, prefix, info):
        return dict(state_dict)  # a plain RepVGG checkpoint already holds the blocks' entries

    # -------------------------------------------------------------- the model's own blocks (MindSpore)

    def model_blocks(self, net):
        from .blocks import repvgg_blocks

        return repvgg_blocks(net)

    def model_layout(self, net):
        from .blocks import repvgg_layout

        return repvgg_layout(net)

    def to_deploy(self, net):
        from .blocks import to_single_branch

        return to_single_branch(net)


register_kind(RepVGGKind())
