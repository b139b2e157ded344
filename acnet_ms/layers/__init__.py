"""Self-contained Cells: they know nothing of training, files or models."""
from .acb import ACBlock, switch_to_deploy
from .conv_bn import BLOCK_TYPES, conv_bn
from .selective_kernel import SelectiveKernel

__all__ = ["ACBlock", "switch_to_deploy", "conv_bn", "BLOCK_TYPES", "SelectiveKernel"]
