"""What the analyses share: checkpoints as subjects, their BN-folded kernels, kernel positions, evaluation.

Every checkpoint form gives the same numbers: an ACB training checkpoint is
folded in memory, a plain one is read as it is, a fully folded one
(``convert.py --fold_bn``) is already folded, and a stock MindCV checkpoint
(no metadata) is a plain one of the model ``--model`` names.  Kernels come out
of :mod:`acnet_ms.kinds.identities`'s functions; evaluation is :func:`acnet_ms.engine.evaluation.eval_setup`
+ :func:`acnet_ms.engine.evaluation.evaluate`, the code ``validate.py`` runs.
"""
import os
from dataclasses import dataclass, field

import numpy as np

from ..config import loader as config
from ..engine import data
from ..reparam import state as state_map
from ..io.checkpoint import read_checkpoint
from ..cli import UserError
from ..engine.evaluation import eval_setup, evaluate, recorded_options
from ..models import checkpoint_forms
from ..models.factory import uninitialised_model
from ..reparam.forms import DEPLOY, STOCK, Forms

#: position groups of the sparsity analysis (and of the magnitude analysis's summary)
GROUPS = ("skeleton", "corner", "all")


# ---------------------------------------------------------------- the fold functions (one adapter each)

def _model_of(subject):
    """``(model, num_classes)`` of a subject: its options, else what the checkpoint recorded."""
    model = subject.cfg.get("model") or subject.meta.get("model")
    if not model:
        raise UserError(f"{subject.path}: the checkpoint does not record its model; pass --model NAME")
    return model, subject.cfg.get("num_classes") or subject.meta.get("num_classes")


def _fold_blocks(subject):
    """Fold every block (any kind) of a checkpoint into plain conv + BN entries; returns (state, block names).

    Where each block's fold goes comes from the model (``models.checkpoint_forms``)."""
    arrays = subject.arrays
    if not state_map.block_prefixes(arrays):
        return state_map.network_entries(arrays), []
    model, num_classes = _model_of(subject)
    moved = checkpoint_forms(model, num_classes, subject.meta, state=arrays).move(arrays, STOCK)
    return moved.state, moved.blocks


def _fold_bns(subject, state):
    """Fold every BatchNorm that follows a conv into it (the model's own conv/BN pairs, those present)."""
    model, num_classes = _model_of(subject)
    pairs = uninitialised_model(model, num_classes, deploy=True).acnet.fused_pairs
    return Forms(pairs=[p for p in pairs if p[0] + ".weight" in state]).move(state, DEPLOY).state


# ---------------------------------------------------------------- checkpoints

@dataclass
class Subject:
    """One checkpoint under analysis: its arrays, metadata, and validate.py's options for it."""
    label: str
    path: str
    arrays: dict
    meta: dict
    cfg: dict = field(default_factory=dict)

    @property
    def form(self):
        """``folded`` (convert.py --fold_bn), the block kind of a training form (``acb``) or ``plain``."""
        if self.meta.get("deploy"):
            return "folded"
        if not self.plain_state()[1]:
            return "plain"
        return state_map.infer_block(self.arrays)[0]

    def plain_state(self):
        """``(state, acb_names)``: the checkpoint as plain-model entries (ACBs folded, trainer entries dropped)."""
        if "_plain" not in self.__dict__:
            if self.meta.get("deploy"):
                self._plain = state_map.network_entries(self.arrays), []
            else:
                try:
                    self._plain = _fold_blocks(self)
                except ValueError as err:
                    raise UserError(f"{self.path}: {err}") from None
        return self._plain


def load_subject(path, label=None, argv=()):
    """Read the checkpoint ``path``; its evaluation options are validate.py's.

    That is: the options the checkpoint recorded, overridden by ``argv``
    (``--config FILE`` and ``--option value`` pairs, as validate.py takes them).
    """
    arrays, meta = read_checkpoint(path)
    cfg, _ = config.parse(list(argv), "analysis options", base=recorded_options(meta))
    cfg["ckpt_path"] = path
    if label is None:
        label = os.path.splitext(os.path.basename(path))[0]
    return Subject(label, path, arrays, meta, cfg)


def is_square_kernel(name, shape):
    """True for a k x k conv kernel: a 4-d ``*.weight`` with equal spatial sizes k > 1."""
    return name.endswith(".weight") and len(shape) == 4 and shape[2] == shape[3] > 1


def square_kernel_names(state):
    """Names of the k x k conv kernels of a checkpoint dict, in its order."""
    return [name for name, value in state_map.network_entries(state).items()
            if is_square_kernel(name, np.shape(value))]


def folded_kernels(subject):
    """Layer name -> BN-folded k x k kernel (numpy, float64) of ``subject``; UserError if it has none."""
    state, _ = subject.plain_state()
    if not subject.meta.get("deploy"):
        try:
            state = _fold_bns(subject, state)
        except ValueError as err:
            raise UserError(f"{subject.path}: {err}") from None
    names = square_kernel_names(state)
    if not names:
        raise UserError(f"{subject.path}: no k x k convolution (k > 1) to analyse")
    return {name[:-len(".weight")]: np.asarray(state[name], np.float64) for name in names}


# ---------------------------------------------------------------- positions

def position_mask(k, group):
    """Boolean k x k mask of a position group.

    ``skeleton``: the centre row and centre column (2k - 1 entries, k odd);
    ``corner``: every other entry (for k = 3 exactly the 4 corners);
    ``all``: the whole window.  For even k the "centre" is row and column k // 2.
    """
    if group not in GROUPS:
        raise ValueError(f"unknown position group {group!r}; known: {', '.join(GROUPS)}")
    skeleton = np.zeros((k, k), bool)
    skeleton[k // 2, :] = True
    skeleton[:, k // 2] = True
    return {"skeleton": skeleton, "corner": ~skeleton, "all": np.ones((k, k), bool)}[group]


# ---------------------------------------------------------------- evaluation

class Evaluator:
    """The validation network and loader of one checkpoint, built once; weights swapped per evaluation.

    The network is the plain one (``block_type: base``; an ACB checkpoint is
    folded in memory by the loader's fold) or, for a fully folded checkpoint,
    the fully folded one, built and loaded by :func:`acnet_ms.engine.evaluation.eval_setup`.
    """

    def __init__(self, subject, log=print):
        cfg = dict(subject.cfg)
        if not subject.meta.get("deploy"):
            cfg["block_type"] = "base"
        self.net, self.loader, self.world = eval_setup(cfg, subject.arrays,
                                                       folded_bn=bool(subject.meta.get("deploy")), log=log,
                                                       meta=subject.meta)
        self.params = {p.name: p for p in self.net.get_parameters() if is_square_kernel(p.name, tuple(p.shape))}
        if not self.params:
            raise UserError(f"{subject.path}: no k x k convolution (k > 1) to analyse")
        self.kernels = {name: p.asnumpy() for name, p in self.params.items()}

    def evaluate(self, kernels=None, transform=None):
        """validate.py's metrics dict, with ``kernels`` (name -> array) in place of the checkpoint's.

        The checkpoint's kernels are put back afterwards; ``transform`` maps
        each NCHW image batch (see :func:`acnet_ms.engine.evaluation.evaluate`).
        """
        try:
            self._load(kernels or {})
            return evaluate(self.net, self.loader, self.world, transform=transform)
        finally:
            if kernels:
                self._load(self.kernels)

    def _load(self, kernels):
        import mindspore as ms

        for name, value in kernels.items():
            param = self.params[name]
            param.set_data(ms.Tensor(np.ascontiguousarray(value, dtype=ms.dtype_to_nptype(param.dtype))))


# ---------------------------------------------------------------- checks before any evaluation

def check_data(subjects):
    """Check every checkpoint's validation data before any evaluation starts."""
    for s in subjects:
        spec = data.inspect(s.cfg, "val")
        data.check_num_classes(spec, s.cfg["num_classes"], "validation")


def check_kernels(subjects):
    for s in subjects:
        if not square_kernel_names(s.plain_state()[0]):
            raise UserError(f"{s.path}: no k x k convolution (k > 1) to analyse")


def check_known(values, known, what):
    """UserError naming the first of ``values`` that ``known`` does not hold."""
    unknown = [v for v in values if v not in known]
    if unknown:
        raise UserError(f"unknown {what} '{unknown[0]}'; known: {', '.join(known)}")


# ---------------------------------------------------------------- figures

def require_matplotlib():
    """UserError (one line, how to install it) when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError("the figures need matplotlib, which is not installed: "
                        "pip install -r requirements-study.txt") from None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
