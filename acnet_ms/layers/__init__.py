"""Self-contained Cells that are not block kinds (the kinds' Cells live in ``acnet_ms.kinds.<kind>.cell``)."""
from .conv_bn import conv_bn
from .selective_kernel import SelectiveKernel
from .._moved import moved_attr as _moved_attr

__all__ = ["conv_bn", "SelectiveKernel"]


# the names this module had before the package was laid out by role (acnet_ms/_moved.py)
__getattr__ = _moved_attr(__name__)
