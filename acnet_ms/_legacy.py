"""The old functions whose successors take other arguments, with their old signatures, for
:mod:`acnet_ms._moved` (each warns there, naming its successor).  They go in 0.3.0."""


def expected_shapes(model, num_classes):
    """Parameter name -> shape of the plain (``base``) form of ``model``, in the model's order."""
    from .io.checkpoint import shapes_of
    from .models.factory import uninitialised_model

    return shapes_of(uninitialised_model(model, num_classes))


def fused_model(model, num_classes):
    """The fully folded model and its ``(conv, bn, eps)`` pairs."""
    from .models import create_model

    net = create_model(model, num_classes=num_classes, deploy=True)
    return net, net.acnet.fused_pairs


def train_macs(in_channels, out_channels, kernel_size, stride=1, groups=1, height=56, width=None, padding=None,
               branch_bn=True, batch=1):
    """Multiply-adds of one forward pass of a DBB and of the plain conv it replaces (``{"plain", "block",
    "ratio", "branches"}``)."""
    from .kinds import get_kind

    return get_kind("dbb").macs(in_channels, out_channels, kernel_size, {"branch_bn": branch_bn}, stride=stride,
                                groups=groups, height=height, width=width, padding=padding, batch=batch)


def mac_ratio(kernel_size, num_kxk=1, scale=True, branch_bn=True):
    """Multiply-adds of a rep block's training form per multiply-add of the plain conv (channel-independent)."""
    from .kinds import get_kind

    options = {"num_kxk": num_kxk, "scale": scale, "branch_bn": branch_bn}
    return get_kind("rep").macs(8, 8, kernel_size, options, height=8)["ratio"]


def repvgg_find(state):
    """The prefixes of the training-form RepVGG blocks in ``state``, in file order (optimizer slots and EMA
    copies of their entries are not blocks)."""
    from .reparam.state import find_blocks

    return list(find_blocks(state, native=True))


def acb_check_kernel_size(kernel_size, what="kernel_size"):
    """ValueError unless ``kernel_size`` is an odd integer >= 3 (an ACB's)."""
    from .kinds.cell import check_kernel_size

    check_kernel_size(kernel_size, "ACB" if what == "kernel_size" else f"ACB ({what})", minimum=3)


def rep_check_kernel_size(kernel_size):
    """ValueError unless ``kernel_size`` is an odd integer >= 1 (a rep block's)."""
    from .kinds.cell import check_kernel_size

    check_kernel_size(kernel_size, "RepBlock", minimum=1)
