"""The walker that switches every re-parameterizable block of a network to its inference form.

A block takes part by having ``switch_to_deploy()`` (and ``reparam_info()``,
which tells a checkpoint converter how to fold it): the walker does not know
any block class.
"""
from ..kinds.cell import name_params, param_prefix, refresh_graph


def reparam_blocks(net):
    """``[(name, cell), ...]`` of the cells of ``net`` that can re-parameterize themselves."""
    return [(name, cell) for name, cell in net.cells_and_names()
            if callable(getattr(cell, "switch_to_deploy", None)) and callable(getattr(cell, "reparam_info", None))]


def switch_to_deploy(net):
    """Switch every re-parameterizable block of ``net`` to its inference form, in place.

    Parameter names are rewritten to their full paths (``layer1.0.conv1.fused_conv.weight``)
    so that the switched network saves and loads like any other.  Returns ``net``.
    """
    for name, cell in reparam_blocks(net):
        if not getattr(cell, "deploy", False):
            prefix = param_prefix(cell, name)
            cell.switch_to_deploy()
            name_params(cell, prefix)
    refresh_graph(net)
    return net
