"""Paired statistics of two classifiers on the same samples, for `python -m runner.compare RUN_A RUN_B`.

"B is better" needs more than two accuracies with overlapping intervals: on the same samples
the two runs' mistakes are paired, and only the samples where they disagree carry evidence.
"""

from __future__ import annotations

import math

import numpy as np


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> dict:
    """Exact (binomial) McNemar test: of the samples exactly one run gets right, is the split 50/50?"""
    only_a = int((a_correct & ~b_correct).sum())
    only_b = int((~a_correct & b_correct).sum())
    n = only_a + only_b
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2**n if n else 1.0
    return {"only_a_right": only_a, "only_b_right": only_b, "p_value": min(1.0, 2 * tail)}


def bootstrap_difference(a_correct: np.ndarray, b_correct: np.ndarray, resamples: int = 10_000,
                         seed: int = 0) -> dict:
    """Accuracy of B minus A, with a 95% paired bootstrap interval (the same resampled samples for both)."""
    difference = b_correct.astype(float) - a_correct.astype(float)
    draws = np.random.default_rng(seed).integers(0, len(difference), size=(resamples, len(difference)))
    means = difference[draws].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"difference": float(difference.mean()), "ci95": [float(low), float(high)], "resamples": resamples}


def per_class_deltas(a_correct: np.ndarray, b_correct: np.ndarray, labels: np.ndarray, names: list[str]) -> list[dict]:
    """Per-class accuracy of A and B, the largest change first."""
    rows = []
    for cls in np.unique(labels):
        mask = labels == cls
        a, b = float(a_correct[mask].mean()), float(b_correct[mask].mean())
        rows.append({"class": names[int(cls)] if int(cls) < len(names) else str(cls), "n": int(mask.sum()),
                     "a": a, "b": b, "delta": b - a})
    return sorted(rows, key=lambda r: -abs(r["delta"]))
