"""The evaluator's settings' schema and rules: `python -m runner.evaluate metric=loss split=test ...`
(top level in conf/evaluate.yaml) and `python -m runner evaluate.metric=loss` (under `evaluate.`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any  # noqa: UP035 (OmegaConf reads these annotations at run time)

from omegaconf import DictConfig

from runner.common.rules import device_name, fail, int_at_least, one_of, positive_number
from runner.evaluation.metric_names import METRICS
from runner.evaluation.weight_names import CHOICES as WEIGHTS_CHOICES


@dataclass
class EvaluationSettings:
    split: str = "val"
    """val | test (test: the final look, once, at the best checkpoint by val)."""
    metric: str = "top1"
    """loss | top1 | top5 | balanced_accuracy | ece: chooses the best checkpoint."""
    direction: str = "auto"
    """max | min | auto (min for loss and ece, max otherwise)."""
    batch_size: int | None = None
    """Samples per forward pass; null: the run's trainer.micro_batch_size (it fits the device's memory, and
    large batches are slower on a CPU: about 260 vs 470 images/s at 256 vs 32 for the ConvNet at 128 px)."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N | mps."""
    precision: str = "32"
    """32 | bf16 | 16 (16 on CUDA only)."""
    num_workers: int | None = None
    """DataLoader worker processes; null: as many as the run trained with (its trainer.num_workers)."""
    tta: str = "none"
    """none | flip | translate | flip+translate | multicrop: the views whose probabilities are averaged (the image
    and its mirror; one-pixel shifts; both; five 7/8 crops: runner/evaluation/inference.py)."""
    galleries: bool = True
    """Confusion matrix and loss galleries for the best checkpoint."""
    trust: list[str] = field(default_factory=list)
    """Modules whose callables a checkpoint's saved config may name (besides runner's and torchvision's models)."""
    allow_fold_test: bool = False
    """split=test of a run trained on a fold (dataset.folds): refused unless true (its validation was one fold; the
    test split is for the final model trained on all of train+val; runner/evaluation/fold_rules.py)."""


@dataclass
class TrainingEvaluation(EvaluationSettings):
    """`evaluate.` in conf/train.yaml."""

    after_training: bool = True
    """Evaluate every checkpoint on the validation split when training ends."""
    during_training: bool = False
    """A separate evaluator process follows the run (watch mode): validation curves while it trains."""


@dataclass
class EvaluateCommand(EvaluationSettings):
    """conf/evaluate.yaml: what `python -m runner.evaluate` evaluates, and how."""

    run_dir: str | None = None
    """A run directory (outputs/<name>/<time>)."""
    checkpoint: str | None = None
    """Or one checkpoint file."""
    data_root: str | None = None
    """Where the data lives on this machine, if not where the run found it."""
    watch: bool = False
    """Evaluate each new checkpoint while the run trains; stop when it has finished."""
    poll_seconds: float = 2.0
    """watch: seconds between looks for new checkpoints."""
    idle_minutes: float = 60
    """watch: give up after this long without a new checkpoint."""
    ensemble: Any | None = None
    """[RUN_A, RUN_B, ...]: average the members' best checkpoints."""
    ensemble_top_k: int | None = None
    """K: average the K best checkpoints of run_dir."""
    weights: str = "all"
    """all | raw | ema | swa: which of a checkpoint's weights to evaluate (ema, swa: the averages training saved
    beside the raw ones). The run's best (best.json) is chosen among all the rows it has, whichever."""


def validate(settings: DictConfig, prefix: str = "") -> None:
    """The evaluator's block; `prefix` is "evaluate." inside a training config."""
    one_of(f"{prefix}split", settings.split, ("val", "test"))
    one_of(f"{prefix}metric", settings.metric, METRICS)
    one_of(f"{prefix}direction", settings.direction, ("auto", "max", "min"))
    if settings.batch_size is not None:
        int_at_least(f"{prefix}batch_size", settings.batch_size, 1, f"{prefix}batch_size=256, or null")
    if settings.num_workers is not None:
        int_at_least(f"{prefix}num_workers", settings.num_workers, 0, f"{prefix}num_workers=2, or null")
    one_of(f"{prefix}precision", str(settings.precision), ("32", "bf16", "16"))
    one_of(f"{prefix}tta", settings.tta, ("none", "flip", "translate", "flip+translate", "multicrop"))
    for module in settings.trust:
        if not all(part.isidentifier() for part in str(module).split(".")):
            fail(f"{prefix}trust", list(settings.trust), f"holds {module!r}, which is not a module name",
                 f"{prefix}trust=[my_project.models]")
    device_name(f"{prefix}device", settings.device)
    if "poll_seconds" in settings:
        positive_number("poll_seconds", settings.poll_seconds, "poll_seconds=2")
        positive_number("idle_minutes", settings.idle_minutes, "idle_minutes=60")
        if settings.ensemble_top_k is not None:
            int_at_least("ensemble_top_k", settings.ensemble_top_k, 1, "ensemble_top_k=3")
        one_of("weights", settings.weights, WEIGHTS_CHOICES)
