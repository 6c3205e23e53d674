"""The checkpoint settings' schema and rules: `python -m runner checkpoint.every_epochs=1 checkpoint.every_updates=100`.

No torch here (runner/config/schema.py reads it for Tab completion and the first log line).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from runner.common.rules import fail, int_at_least


@dataclass
class CheckpointSettings:
    every_epochs: int = 5
    """Write a checkpoint every N epochs (and after the last one)."""
    keep_last: int | None = None
    """Keep only the newest N periodic checkpoints; null keeps all (the evaluator wants them)."""
    every_updates: int | None = None
    """N: every N optimizer updates a light checkpoint (the weights only, never resumed from) in
    checkpoints/updates/update-NNNNNNNN.pt, and the initial weights as update-00000000.pt
    (runner/training/light_checkpoints.py); null: none."""
    keep_updates: int | None = None
    """Keep only the newest N light checkpoints (and always update-00000000.pt); null keeps all."""


LIGHT_NAME = re.compile(r"^update-\d+\.pt$")  # runner/training/light_checkpoints.py's names


def validate_checkpoints(checkpoint: DictConfig, resume: str | None = None) -> None:
    """checkpoint.*, and a resume= that names a light checkpoint (one UserError at the first problem)."""
    if resume is not None and LIGHT_NAME.match(Path(resume).name):
        fail("resume", resume, "is a light checkpoint (the weights only, checkpoint.every_updates): a run resumes "
             "from a full one, with the optimizer and the random streams", "resume=RUN/checkpoints/epoch-NNNN.pt")
    int_at_least("checkpoint.every_epochs", checkpoint.every_epochs, 1, "checkpoint.every_epochs=1")
    if checkpoint.keep_last is not None:
        int_at_least("checkpoint.keep_last", checkpoint.keep_last, 1, "checkpoint.keep_last=3, or null to keep all")
    every, keep = checkpoint.every_updates, checkpoint.keep_updates
    if every is not None:
        int_at_least("checkpoint.every_updates", every, 1, "checkpoint.every_updates=100, or null for none")
    if keep is not None:
        int_at_least("checkpoint.keep_updates", keep, 1, "checkpoint.keep_updates=10, or null to keep all")
    if keep is not None and every is None:
        fail("checkpoint.keep_updates", keep, "keeps light checkpoints, and none are written",
             "checkpoint.every_updates=100 to write them, or checkpoint.keep_updates=null")
