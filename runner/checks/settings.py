"""The checks' settings' schema and rules: `python -m runner.check checks=[overfit_batch] checks.overfit_steps=300`
and `python -m runner.lr_find lr_find.steps=100`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any  # noqa: UP035 (OmegaConf reads these annotations at run time)

from omegaconf import DictConfig, ListConfig

from runner.common.errors import UserError
from runner.common.rules import int_at_least, one_of, positive_number


@dataclass
class ChecksSettings:
    only: Any = "all"
    """all, or a list of check names (`checks=[a,b]` on the command line is short for checks.only=[a,b])."""
    preflight: bool = False
    """python -m runner checks.preflight=true: the fast checks before training."""
    strict: bool = True
    """preflight: refuse to train on a FAIL."""
    batch_size: int = 64
    """Samples a check looks at."""
    overfit_samples: int = 8
    """overfit_batch: the samples to overfit."""
    overfit_steps: int = 200
    """overfit_batch: updates allowed."""
    overfit_lr: float | None = None
    """overfit_batch: the learning rate; null: optimizer.lr."""
    baseline_steps: int = 50
    """input_independent: updates of each of the two short trainings."""
    baseline_batch_size: int = 32
    """input_independent: their batch size."""
    baseline_classes: int = 10
    """input_independent: on the most frequent classes only (the signal shows sooner)."""
    checkpoint: str | None = None
    """inspect_data: a checkpoint whose highest-loss training samples the report shows (label noise shows there)."""
    min_batchnorm_samples: int = 16
    """normalization: the fewest samples per micro-batch whose BatchNorm statistics are trusted."""
    augmentation_steps: int = 100
    """augmentation_consistency: updates of the quick model on clean images (batches of baseline_batch_size)."""
    augmentation_samples: int = 256
    """augmentation_consistency: held-out images it compares clean and augmented (at most a third of them)."""


@dataclass
class LrFindSettings:
    start_lr: float = 1.0e-7
    """The range test's first learning rate."""
    end_lr: float = 10.0
    """Its last learning rate."""
    steps: int = 200
    """Updates, at learning rates spaced evenly in log scale."""
    smoothing: float = 0.05
    """Weight of the newest loss in the running average that stops the test when it diverges."""
    diverge_factor: float = 4.0
    """Stop when the smoothed loss exceeds this multiple of its minimum."""
    method: str = "steepest"
    """steepest (where the loss falls fastest) | valley (two thirds down its longest fall, cautious) | minimum
    (the lowest loss's lr / 10)."""


def check_names() -> list[str]:
    """The checks' names, from their registry (imported only when a list of checks is asked for:
    the checks import torch and the data)."""
    from runner.checks.registry import CHECKS, ENTRY_CHECKS

    return [*CHECKS, *ENTRY_CHECKS]


def validate(cfg: DictConfig) -> None:
    """checks.* and lr_find.*; check names are those of the checks' registry."""
    checks, lr_find = cfg.checks, cfg.lr_find
    if checks.only != "all":
        names_known = check_names()
        names = list(checks.only) if isinstance(checks.only, ListConfig) else [checks.only]
        if not names:
            raise UserError(f"checks.only={names} names no check. Fix: checks=[{','.join(names_known)}] "
                            "(any of them), or checks.only=all")
        unknown = [name for name in names if name not in names_known]
        if unknown:
            raise UserError(f"checks.only={checks.only} names unknown checks {unknown}. "
                            f"Fix: checks=[{','.join(names_known)}] (any of them), or checks.only=all")
    for key in ("batch_size", "overfit_samples", "overfit_steps", "baseline_steps", "baseline_batch_size",
                "augmentation_steps"):
        int_at_least(f"checks.{key}", checks[key], 1, f"checks.{key}=32")
    int_at_least("checks.baseline_classes", checks.baseline_classes, 2, "checks.baseline_classes=10")
    # fewer held-out images than this cannot show a drop beyond chance (a sign test on 10 flips has p >= 0.001)
    int_at_least("checks.augmentation_samples", checks.augmentation_samples, 20, "checks.augmentation_samples=256")
    int_at_least("checks.min_batchnorm_samples", checks.min_batchnorm_samples, 2, "checks.min_batchnorm_samples=16")
    if checks.overfit_lr is not None:
        positive_number("checks.overfit_lr", checks.overfit_lr, "checks.overfit_lr=1e-3, or null for optimizer.lr")
    positive_number("lr_find.start_lr", lr_find.start_lr, "lr_find.start_lr=1e-7")
    if not lr_find.end_lr > lr_find.start_lr:
        raise UserError(f"lr_find.end_lr={lr_find.end_lr} is not above lr_find.start_lr={lr_find.start_lr}. "
                        "Fix: lr_find.end_lr=10")
    int_at_least("lr_find.steps", lr_find.steps, 2, "lr_find.steps=200")
    if not 0 < lr_find.smoothing <= 1:
        raise UserError(f"lr_find.smoothing={lr_find.smoothing} must be in (0, 1]. Fix: lr_find.smoothing=0.05")
    positive_number("lr_find.diverge_factor", lr_find.diverge_factor, "lr_find.diverge_factor=4")
    one_of("lr_find.method", lr_find.method, ("steepest", "valley", "minimum"))
