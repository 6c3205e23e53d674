"""Paired statistics of two classifiers on the same samples, for `python -m runner.compare RUN_A RUN_B`.

"B is better" needs more than two accuracies with overlapping intervals: on the same samples
the two runs' mistakes are paired, and only the samples where they disagree carry evidence.
"""

from __future__ import annotations

import math

import numpy as np


def fair_coin_lower_tail(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2): the exact tail of a sign (McNemar) test; 1 when n is 0."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n if n else 1.0


def two_proportion_p_value(better: float, baseline: float, n_better: int, n_baseline: int) -> float:
    """One-sided p-value that accuracy `better` (on n_better samples) exceeds `baseline` (on n_baseline
    others) by chance: the two-proportion z-test with the pooled proportion."""
    pooled = (better * n_better + baseline * n_baseline) / (n_better + n_baseline)
    spread = math.sqrt(max(pooled * (1 - pooled) * (1 / n_better + 1 / n_baseline), 1e-12))
    return 0.5 * math.erfc((better - baseline) / spread / math.sqrt(2))


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> dict:
    """Exact (binomial) McNemar test: of the samples exactly one run gets right, is the split 50/50?"""
    only_a = int((a_correct & ~b_correct).sum())
    only_b = int((~a_correct & b_correct).sum())
    tail = fair_coin_lower_tail(min(only_a, only_b), only_a + only_b)
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
