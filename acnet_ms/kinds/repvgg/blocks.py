"""MindCV's RepVGG (``repvgg_a0`` ... ``repvgg_b3``, ``repvgg_b1g2`` ...): its blocks and its deploy form.

MindCV's RepVGG network trains three branches per block and is meant to run
one conv per block at inference, but MindCV 0.3.0's deploy path does not run
in MindSpore 2.8:

* ``RepVGGBlock.switch_to_deploy()`` reads ``rbr_dense.conv``: the branches
  are ``SequentialCell``s, indexed ``0``/``1`` ("'SequentialCell' object has no
  attribute 'conv'");
* ``repvgg_model_convert`` calls ``Cell.modules()``, which MindSpore has not;
* ``mindcv.create_model("repvgg_a0", deploy=True)`` passes ``deploy`` twice to
  the constructor ("dict() got multiple values for keyword argument 'deploy'");
* ``RepVGG(..., deploy=True)`` gives its convs ``pad_mode="zeros"``, which
  MindSpore's ``Conv2d`` refuses.

So the deploy form is made here from the training-form network, in place:
each block's three branches give way to ``rbr_reparam``, a k x k conv with
bias, stride, padding and groups of the dense branch's conv: the network
``RepVGG(deploy=True)`` means to build, with its parameter names
(``stage1.0.rbr_reparam.weight``/``.bias``) in its order.  The weights come
from :mod:`acnet_ms.kinds.repvgg.state` (pure numpy), on checkpoint dicts.
"""
from . import state as repvgg_state
from ..cell import name_params, param_prefix, refresh_graph
from ..geometry import conv_like


def _block_class():
    from mindcv.models.repvgg import RepVGGBlock

    return RepVGGBlock


def repvgg_blocks(net):
    """``[(cell path, block), ...]``: the MindCV ``RepVGGBlock``s of ``net`` still in training form."""
    kind = _block_class()
    return [(name, cell) for name, cell in net.cells_and_names()
            if isinstance(cell, kind) and getattr(cell, "rbr_reparam", None) is None]


def _dense_conv(name, cell):
    from mindspore import nn

    conv = cell.rbr_dense[0]
    if type(conv) is not nn.Conv2d:
        raise ValueError(f"RepVGG block '{name}': its dense branch is a {type(conv).__name__}, not a plain "
                         f"conv (fold its block kind first: build the base model)")
    return conv


def block_info(name, cell):
    """The layout entry of one training-form block (see :mod:`acnet_ms.kinds.repvgg.state`)."""
    conv = _dense_conv(name, cell)
    identity = cell.rbr_identity
    eps = {"dense": float(cell.rbr_dense[1].eps), "1x1": float(cell.rbr_1x1[1].eps)}
    if identity is not None:
        eps["identity"] = float(identity.eps)
    return dict(kind=repvgg_state.KIND, slot="bias", bn=None, in_channels=int(conv.in_channels), groups=int(conv.group), kernel=int(conv.kernel_size[0]),
                identity=identity is not None, eps=eps)


def repvgg_layout(net):
    """``{parameter prefix: layout entry}`` of the training-form RepVGG blocks of ``net`` (a base model)."""
    return {param_prefix(cell, name): block_info(name, cell) for name, cell in repvgg_blocks(net)}


def to_single_branch(net):
    """Turn every training-form RepVGG block of ``net`` into its deploy form, in place.

    The new convs hold freshly initialised weights: load a folded checkpoint
    (:func:`acnet_ms.reparam.state.fold_state` of the blocks' layout) into them.  Returns the layout
    of the blocks replaced (``{}`` for a network without any).
    """
    layout = {}
    for name, cell in repvgg_blocks(net):
        prefix = param_prefix(cell, name)
        layout[prefix] = block_info(name, cell)
        conv = conv_like(_dense_conv(name, cell), has_bias=True)
        for branch in repvgg_state.BRANCH_CELLS.values():
            if branch in cell._cells:
                del cell._cells[branch]
            cell.__dict__.pop(branch, None)
        cell.__dict__.pop(repvgg_state.DEPLOY_CELL, None)
        setattr(cell, repvgg_state.DEPLOY_CELL, conv)
        name_params(conv, f"{prefix}.{repvgg_state.DEPLOY_CELL}")
        cell.deploy = True
    if layout:
        refresh_graph(net)
    return layout


def repvgg_to_deploy(net):
    """What MindCV's ``repvgg_model_convert`` is for, in place: every training-form RepVGG block of ``net``
    becomes its deploy conv, holding the fold of the block's current weights and BN statistics.

    Returns the number of blocks folded.  Put ``net`` in eval mode to use it.
    """
    import mindspore as ms

    layout = repvgg_layout(net)
    arrays, folded = {p.name: p.asnumpy() for p in net.get_parameters()}, {}
    for prefix, info in layout.items():
        weight, bias = repvgg_state.deploy_entries(prefix)
        folded[weight], folded[bias] = repvgg_state.fold_block(arrays, prefix, info)
    to_single_branch(net)
    for param in net.get_parameters():
        if param.name in folded:
            param.set_data(ms.Tensor(folded[param.name]))
    return len(layout)
