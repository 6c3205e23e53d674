"""Classification metrics from a split's predictions, used by `python -m runner.evaluate`.

Everything here is a plain function of (log-probabilities, labels): no model, no files. The inputs
cover the whole split, every sample once, so the figures are exact rather than batch averages.
Their names and which way each is better: runner/evaluation/metric_names.py.
"""

from __future__ import annotations

import math

import torch


def summarize(log_probabilities: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Loss, top-1, top-5, balanced accuracy, per-class accuracy, a 95% CI for top-1, and ECE.

    Log-probabilities rather than probabilities: the loss of a confidently wrong prediction
    stays exact instead of underflowing to -log(0).
    """
    n = len(labels)
    losses = -log_probabilities.gather(1, labels[:, None]).squeeze(1)
    predictions = log_probabilities.argmax(dim=1)
    correct = predictions == labels
    top5 = (log_probabilities.topk(5, dim=1).indices == labels[:, None]).any(dim=1) if num_classes > 5 else None
    per_class = per_class_accuracy(predictions, labels, num_classes)
    present = [a for a in per_class if a is not None]
    top1 = float(correct.float().mean())
    low, high = wilson_interval(int(correct.sum()), n)
    return {
        "n": n,
        "loss": float(losses.mean()),
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
