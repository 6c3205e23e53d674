"""What runs beside training in `python -m runner`: the hooks runner/run.py fills and training calls.

Training never imports the checks or the evaluator (the import contract in pyproject.toml); it
receives them here, in one object, and calls them at three moments (rank 0 alone):

    before training     preflight(splits, device)   the checks; raises to stop the run
    after a checkpoint  best_checkpoint()           the checkpoint retention keeps (checkpoint.keep_last)
                        validation_metric(path)     a sweep trial's pruner measures it (sweep.pruner)
                        stop_early(path)            why to stop now (trainer.early_stopping), or None
    after the run       evaluate()                  the evaluator; its best validation row

Each hook runs under runtime.random_state_kept (torch.random.fork_rng of the CPU and every CUDA
device, with Python's and NumPy's streams): whatever it draws, training's random streams go on
as if it had not run, so a run with every hook on trains the same weights as a run with none,
and a resumed run (which skips an evaluation already done) the same as a straight one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from runner.common.runtime import random_state_kept


@dataclass(frozen=True)
class Hooks:
    """The other stages, as training calls them; a hook left None is not run."""

    preflight: Callable[[dict, torch.device], None] | None = None
    """Before the first update: (the splits, the device) -> None; raises to stop the run."""
    best_checkpoint: Callable[[], Path | None] | None = None
    """After a checkpoint, with checkpoint.keep_last: the best checkpoint ranked so far, which retention keeps."""
    validation_metric: Callable[[Path], float] | None = None
    """After a checkpoint of a sweep trial with a pruner: the checkpoint's validation metric, reported to the study."""
    stop_early: Callable[[Path], str | None] | None = None
    """After a checkpoint: why to stop training now (trainer.early_stopping), or None to go on."""
    evaluate: Callable[[], dict | None] | None = None
    """After the run: the evaluator on the run's checkpoints; returns the best validation row (or None)."""
    after_checkpoint: Callable[[Path, int], None] | None = None
    """Set by the training job, not by run.py: a sweep trial's pruning report, (path, epochs done) -> None;
    raises optuna.TrialPruned to stop (runner/sweep/trial_link.py, built on validation_metric)."""

    def run_preflight(self, splits: dict, device: torch.device) -> None:
        kept_streams(self.preflight, splits, device)

    def best_so_far(self) -> Path | None:
        return kept_streams(self.best_checkpoint)

    def report_checkpoint(self, path: Path, epochs_done: int) -> None:
        kept_streams(self.after_checkpoint, path, epochs_done)

    def stop_reason(self, path: Path) -> str | None:
        return kept_streams(self.stop_early, path)

    def run_evaluation(self) -> dict | None:
        return kept_streams(self.evaluate)

    def with_pruning(self, report: Callable[[Path, int], None] | None) -> Hooks:
        """A copy whose after_checkpoint is the sweep trial's pruning report."""
        return dataclasses.replace(self, after_checkpoint=report)


NO_HOOKS = Hooks()


def kept_streams(hook: Callable | None, *arguments):
    """hook(*arguments) with training's random streams put back afterwards; None when there is no hook."""
    if hook is None:
        return None
    with random_state_kept():
        return hook(*arguments)
