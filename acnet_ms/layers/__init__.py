"""Self-contained Cells that are not block kinds (the kinds' Cells live in ``acnet_ms.kinds.<kind>.cell``)."""
from .conv_bn import conv_bn
from .selective_kernel import SelectiveKernel

__all__ = ["conv_bn", "SelectiveKernel"]
