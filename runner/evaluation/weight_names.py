"""The weights a row of `python -m runner.evaluate` was measured with: raw | ema | swa (averaged_weights.py).

Kept apart from averaged_weights (which imports torch) for the readers of the results: the runs table and the
sweeper's objective, which Hydra's sweeper plugin imports at every start.
"""

from __future__ import annotations

WEIGHTS = ("raw", "ema", "swa")  # in this order: a tie between two rows of a checkpoint goes to the first
CHOICES = ("all", *WEIGHTS)  # the evaluator's `weights` setting


def wanted(setting: str | None) -> tuple[str, ...]:
    """The weights a `weights=` setting asks for (all: every one a checkpoint holds)."""
    return WEIGHTS if setting in (None, "all") else (str(setting),)


def weights_of(row: dict) -> str:
    """A row's weights; a row an older evaluator wrote has none: the raw weights."""
    return row.get("weights") or "raw"
