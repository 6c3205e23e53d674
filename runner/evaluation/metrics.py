"""Classification metrics from a split's predictions, used by `python -m runner.evaluate`.

Everything here is a plain function of (log-probabilities, labels): no model, no files. The inputs
cover the whole split, every sample once, so the figures are exact rather than batch averages.
Their names and which way each is better: runner/evaluation/metric_names.py.

One word, one meaning: `loss` is the run's configured loss (label smoothing, a user's focal loss), the
figure training logs as its loss; `cross_entropy` is -mean log p(true class), whatever the loss.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial

import torch
import torch.nn.functional as F

from runner.common.trust import is_trusted, module_of

log = logging.getLogger("runner.evaluate")
RUNNER_LOSSES = ("runner.training.losses.cross_entropy", "runner.training.distill.distillation")


@dataclass(frozen=True)
class EvaluatedLoss:
    """What a row's `loss` measures: its name and (log-probabilities, labels) -> per-sample losses (N,)."""

    name: str
    per_sample: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def configured_loss(config: dict, trusted: list[str]) -> EvaluatedLoss:
    """The loss a checkpoint's run trained with (its saved config's `loss` block), on log-probabilities: the
    loss of a model that outputs logits equals it on its log-probabilities (log_softmax leaves them unchanged).

    runner's cross-entropy with its label smoothing; loss=distill: its labels' term (the teachers' predictions
    are not at hand offline); a user's loss only from a trusted module (trust=[...]), never a checkpoint's
    arbitrary callable: else cross-entropy, named so, with a warning.
    """
    block = dict(config.get("loss") or {})
    target = block.get("_target_", RUNNER_LOSSES[0])
    smoothing = float(block.get("label_smoothing") or 0.0)
    if target in RUNNER_LOSSES:
        name = "cross_entropy" + (f" (label_smoothing={smoothing:g})" if smoothing else "")
        name = name if target == RUNNER_LOSSES[0] else f"{name}: the labels' term of loss=distill"
        return EvaluatedLoss(name, partial(F.cross_entropy, reduction="none", label_smoothing=smoothing))
    if not is_trusted(target, trusted):
        fix = f"trust=[{module_of(target)}]"
        warn_untrusted_loss(target, fix)
        return EvaluatedLoss(f"cross_entropy (the run's loss {target} is not trusted: {fix})",
                             partial(F.cross_entropy, reduction="none"))
    from hydra.utils import instantiate

    return EvaluatedLoss(target, per_sample_of(instantiate(block)))


@cache  # once a process, not at each checkpoint
def warn_untrusted_loss(target: str, fix: str) -> None:
    log.warning("the run's loss %s is not trusted: the evaluator does not call it, and its `loss` column is "
                "cross-entropy. Fix: %s (python -m runner.evaluate) or evaluate.%s (python -m runner)", target, fix, fix)


def per_sample_of(loss: Callable) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A loss returning per-sample values or their mean, as per-sample values (a mean: the same value each)."""
    def per_sample(log_probabilities: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        value = loss(log_probabilities, labels)
        return value.expand(len(labels)) if value.dim() == 0 else value
    return per_sample


def summarize(log_probabilities: torch.Tensor, labels: torch.Tensor, num_classes: int,
              loss: EvaluatedLoss | None = None) -> dict:
    """Loss (the run's `loss`; cross-entropy without one), cross-entropy, top-1, top-5, balanced accuracy,
    per-class accuracy, a 95% CI for top-1, and ECE.

    Log-probabilities rather than probabilities: the loss of a confidently wrong prediction
    stays exact instead of underflowing to -log(0).
    """
    n = len(labels)
    losses = -log_probabilities.gather(1, labels[:, None]).squeeze(1)
    configured = losses if loss is None else loss.per_sample(log_probabilities.float(), labels)
    predictions = log_probabilities.argmax(dim=1)
    correct = predictions == labels
    top5 = (log_probabilities.topk(5, dim=1).indices == labels[:, None]).any(dim=1) if num_classes > 5 else None
    per_class = per_class_accuracy(predictions, labels, num_classes)
    present = [a for a in per_class if a is not None]
    top1 = float(correct.float().mean())
    low, high = wilson_interval(int(correct.sum()), n)
    return {
        "n": n,
        "loss": float(configured.mean()),
        "cross_entropy": float(losses.mean()),
        "loss_function": "cross_entropy" if loss is None else loss.name,  # what `loss` measured
        "top1": top1,
        "top5": None if top5 is None else float(top5.float().mean()),  # 5 classes or fewer: always 1, left out
        "balanced_accuracy": sum(present) / len(present),
        "top1_ci95": [low, high],
        "ece": expected_calibration_error(log_probabilities.exp(), labels),
        "per_class_accuracy": per_class,
    }


def percent(value: float | None) -> str:
    """A fraction as a table cell: 97.50%, or '-' for a metric left out (top5 with <= 5 classes)."""
    return "-" if value is None else f"{100 * value:.2f}%"


def per_class_accuracy(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list:
    """Recall of each class; None for a class with no example in the split."""
    counts = torch.bincount(labels, minlength=num_classes)
    hits = torch.bincount(labels[predictions == labels], minlength=num_classes)
    return [float(h / c) if c > 0 else None for h, c in zip(hits.tolist(), counts.tolist(), strict=True)]


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval for a proportion (95% by default): sound near 0 and 1, unlike p +- z*se."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE: the confidence-weighted gap between confidence and accuracy, over equal-width bins."""
    confidence, predictions = probabilities.max(dim=1)
    correct = (predictions == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            ece += float(inside.float().mean() * (confidence[inside].mean() - correct[inside].mean()).abs())
    return ece


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """counts[true, predicted]."""
    return torch.bincount(labels * num_classes + predictions, minlength=num_classes**2).view(num_classes, num_classes)


def most_confused_pairs(confusion: torch.Tensor, top: int = 10) -> list[dict]:
    """The largest off-diagonal counts: which true class is most often taken for which other class."""
    off_diagonal = confusion.clone()
    off_diagonal.fill_diagonal_(0)
    values, flat = off_diagonal.flatten().topk(min(top, off_diagonal.numel()))
    c = confusion.shape[0]
    return [{"true": int(i // c), "predicted": int(i % c), "count": int(v)}
            for v, i in zip(values.tolist(), flat.tolist(), strict=True) if v > 0]
