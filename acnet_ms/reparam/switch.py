"""The walker that switches every re-parameterizable block of a network to its inference form.

A block takes part by having ``switch_to_deploy()`` (and ``reparam_info()``,
which tells a checkpoint converter how to fold it): the walker does not know
any block class.
"""
import time


def reparam_blocks(net):
    """``[(name, cell), ...]`` of the cells of ``net`` that can re-parameterize themselves."""
    return [(name, cell) for name, cell in net.cells_and_names()
            if callable(getattr(cell, "switch_to_deploy", None)) and callable(getattr(cell, "reparam_info", None))]


def refresh_graph(net):
    """Make graph mode compile ``net`` anew after its structure changed in place.

    MindSpore keys its compiled-graph cache on each Cell's creation time; a
    Cell whose sub-cells were swapped would otherwise keep running its old graph.
    """
    stamp = time.time_ns()
    for i, (_, cell) in enumerate(net.cells_and_names()):
        object.__setattr__(cell, "_create_time", stamp + i)


def param_prefix(cell, default=""):
    """The prefix of ``cell``'s parameter names in its network (MindCV's names need not be cell paths)."""
    for local, param in cell.parameters_and_names():
        if param.name.endswith("." + local):
            return param.name[:-len(local) - 1]
        return default
    return default


def name_params(cell, prefix):
    """Give the parameters of ``cell``, placed at ``prefix`` in a network, their full names there."""
    for local, param in cell.parameters_and_names():
        param.name = f"{prefix}.{local}" if prefix else local


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
