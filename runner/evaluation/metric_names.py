"""The evaluator's metrics by name, and which way each is better: for every place that ranks by one
(the best checkpoint, ensembles, early stopping, the sweeper's study). No torch here: the config's
validation reads it at every start, before anything heavy is imported.
"""

from __future__ import annotations

# the scalars of a row; any can pick the best. loss: the run's configured loss; cross_entropy: -mean log p(true)
METRICS = ("loss", "top1", "top5", "balanced_accuracy", "ece", "cross_entropy")


def direction(metric: str, setting: str = "auto") -> str:
    """Is a higher `metric` better ("max") or a lower one ("min")? `setting` (max|min) overrides.

    The one rule: the evaluator's best checkpoint, ensembles and the sweeper's study all use it.
    """
    if setting != "auto":
        return setting
    return "min" if metric in ("loss", "ece", "cross_entropy") else "max"
