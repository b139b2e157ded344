"""Training by role.

``setup``        inputs checked and options resolved, the run folder, logs, stop signals
``run``          the run's records: read-only options (RunConfig), where it stands (RunState), its Plan
``factories``    learning-rate schedule, loss scaling, optimizer, loss and the train step
``train_step``   the compiled train step (AMP, loss scaling on every backend, clipping, accumulation, EMA)
``checkpoints``  what a training checkpoint records, retention, resume
``callbacks``    the end of each epoch: EMA weights, BN sync, validation, summary, saving
``loop``         :func:`train`: the step loop and the sink path

Evaluation stands apart (:mod:`acnet_ms.engine.evaluation`), as do the context and
model building that training and evaluation share (:mod:`acnet_ms.engine.runtime`).
"""
from .loop import train

__all__ = ["train"]
