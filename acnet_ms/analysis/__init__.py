"""Kernel analyses of trained checkpoints: ACNet's Fig. 6 and 7 and its flip / rotation test.

Four analyses, one module each, on one or several checkpoints side by side:

``magnitude``   (Fig. 7, ``kernel_magnitude``) mean |W| per k x k position of the BN-folded kernels,
                per layer normalised
``sparsity``    (Fig. 6, ``kernel_sparsity``) top-1 with a fraction of the skeleton / corner / all
                kernel entries zeroed
``robustness``  (``input_robustness``) top-1 on the validation images as they are, flipped and rotated
``quantization`` (``weight_quantization``) INT8 weight SQNR and range per folded layer; FP32 and INT8
                top-1 of the exported graph in onnxruntime

``common`` holds what they share (checkpoints as :class:`Subject`, folded
kernels, positions, the :class:`Evaluator`); ``output`` the tables, figures
and files.  Evaluation is :mod:`acnet_ms.engine.evaluation`'s, the code
``validate.py`` runs, so a top-1 here at r = 0 (or on unflipped images) is
``validate.py``'s number.

Results are plain dicts (written as JSON); figures are drawn from them with
matplotlib, an optional dependency (``requirements-study.txt``).
"""
from .common import (GROUPS, Evaluator, Subject, _pyplot, check_data, check_kernels, check_known, folded_kernels,
                     is_square_kernel, load_subject, position_mask, require_matplotlib, square_kernel_names)
from .input_robustness import TRANSFORMS, robustness
from .kernel_magnitude import MAGNITUDE_DEFINITION, group_means, kernel_magnitudes, layer_magnitude, magnitude
from .kernel_sparsity import DEFAULT_RATIOS, DEFAULT_SEEDS, check_ratios, sparsify, sparsify_all, sparsity
from .output import figure, table, write
from .weight_quantization import (QUANTIZATION_DEFINITION, calibration_folder, export_graphs, folded_state,
                                  quantization, sqnr_summary, weight_layers)

COMMANDS = ("magnitude", "sparsity", "robustness", "quantization")

__all__ = ["COMMANDS", "DEFAULT_RATIOS", "DEFAULT_SEEDS", "Evaluator", "GROUPS", "MAGNITUDE_DEFINITION", "Subject",
           "TRANSFORMS", "check_data", "check_kernels", "check_known", "check_ratios", "figure", "folded_kernels",
           "group_means", "is_square_kernel", "kernel_magnitudes", "layer_magnitude", "load_subject", "magnitude",
           "position_mask", "quantization", "QUANTIZATION_DEFINITION", "calibration_folder", "export_graphs",
           "folded_state", "sqnr_summary", "weight_layers", "require_matplotlib", "robustness", "sparsify", "sparsify_all", "sparsity",
           "square_kernel_names", "table", "write"]
