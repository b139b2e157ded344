"""Self-contained Cells: they know nothing of training, files or models."""
from .acb import ACBlock
from .conv_bn import conv_bn
from .dbb import DiverseBranchBlock
from .orepa import OREPABlock
from .rep import RepBlock
from .reparam import reparam_blocks, switch_to_deploy
from .selective_kernel import SelectiveKernel

__all__ = ["ACBlock", "DiverseBranchBlock", "OREPABlock", "RepBlock", "switch_to_deploy", "reparam_blocks",
           "conv_bn", "SelectiveKernel"]
