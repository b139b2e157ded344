"""A run's records: its resolved options (read-only), where it stands, and its plan of epochs."""
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional


class RunConfig(Mapping):
    """The options of a run once resolved: read-only, read by key (``cfg["lr"]``) or attribute (``cfg.lr``).

    ``dict(cfg)`` gives a plain copy (for YAML and checkpoint metadata).
    """

    __slots__ = ("_values",)

    def __init__(self, values):
        object.__setattr__(self, "_values", dict(values))

    def __getitem__(self, key):
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self):
        return len(self._values)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no option {name!r}") from None

    def __setattr__(self, name, value):
        raise AttributeError("a run's options are fixed once resolved")

    def __reduce__(self):
        return RunConfig, (self._values,)

    def __repr__(self):
        return f"RunConfig({self._values!r})"


@dataclass
class RunState:
    """Where a run stands; the loop and the epoch's end advance it, a stop signal's line reads it.

    ``resumed_from``: the ``--resume`` checkpoint; ``last_saved`` / ``best_saved``:
    the newest epoch checkpoint and the ``-best`` one this process wrote (the
    ``-best`` one of the resumed run counts while it stays the best);
    ``position``: where the steps stand, in words.
    """
    epoch: int = 0
    step: int = 0
    best_top1: Optional[float] = None
    resumed_from: Optional[str] = None
    last_saved: Optional[str] = None
    best_saved: Optional[str] = None
    position: Optional[str] = None

    @property
    def resume_path(self):
        """The checkpoint to continue from if the run stops now (None before the first one)."""
        return self.last_saved or self.resumed_from


class Plan:
    """Where a run is and what each epoch's end does; the step loop and the sink path share it.

    Epochs are numbered from 1.  A sink launch runs one epoch's steps
    (``sink_size = steps_per_epoch``), so launches, epoch boundaries, the
    schedule position and the checkpoint/validation cadence are the same
    whichever path runs the steps.
    """

    def __init__(self, steps_per_epoch, epochs, lrs, start_epoch=0, start_step=0, val_interval=1,
                 save_interval=1, validating=False):
        self.steps_per_epoch, self.epochs, self.lrs = steps_per_epoch, epochs, lrs
        self.start_epoch, self.start_step = start_epoch, start_step
        self.val_interval, self.save_interval, self.validating = val_interval, save_interval, validating

    @property
    def sink_size(self):
        return self.steps_per_epoch

    def epochs_to_run(self):
        return range(self.start_epoch + 1, self.epochs + 1)

    def launches(self):
        """(epoch, steps) of each sink launch still to run."""
        return [(epoch, self.sink_size) for epoch in self.epochs_to_run()]

    def step_after(self, epoch):
        """The global step count at the end of ``epoch`` (continuing from the resumed step)."""
        return self.start_step + (epoch - self.start_epoch) * self.steps_per_epoch

    def lr_at(self, step):
        """The learning rate the ``step``-th step used (1-based; nan before the first)."""
        return self.lrs[min(step, len(self.lrs)) - 1] if step else float("nan")

    def last(self, epoch):
        return epoch == self.epochs

    def validates(self, epoch):
        return self.validating and (epoch % self.val_interval == 0 or self.last(epoch))

    def saves(self, epoch):
        return epoch % self.save_interval == 0 or self.last(epoch)

    def resume_point(self):
        """(epoch, step) a checkpoint written at the end of the last finished epoch records."""
        return self.start_epoch, self.start_step
