"""Checkpoint files: names, atomic save, safe load, discovery. Written by `python -m runner` into
RUN/checkpoints/, read by `python -m runner.evaluate`.

A checkpoint is a plain dict of tensors and primitives (loadable with
`torch.load(path, weights_only=True)`) named `epoch-NNNN.pt` after the number of completed
epochs (or `preempt-step-NNNNNNNN.pt` when a stop signal came mid-epoch). It is written
through `io.write_atomic`, so a crash at any moment leaves each name absent or complete.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from runner.errors import UserError
from runner.io import remove_stale_temporaries, write_atomic

log = logging.getLogger(__name__)


FORMAT_VERSION = 1


NAME = re.compile(r"^epoch-(\d+)\.pt$")


def checkpoint_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}.pt"


def save_atomic(state: dict, path: Path) -> None:
    """Write `state` to `path` so that `path` is never seen half-written; first clear what killed writers left."""
    remove_stale_temporaries(path.parent)
    write_atomic(path, lambda file: torch.save(state, file))


def load(path: Path, map_location="cpu") -> dict:
    """Load a checkpoint with weights_only=True; a truncated or foreign file is a UserError."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist. Fix: give the path of an epoch-NNNN.pt file") from None
    except Exception as error:
        raise UserError(
            f"checkpoint {path} is truncated or not a checkpoint ({type(error).__name__}: {error}). "
            "Fix: delete it or pick another file from the run's checkpoints/"
        ) from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path} is not a runner checkpoint (no format_version {FORMAT_VERSION}). Fix: pick a file written by runner")
    return state


def list_checkpoints(directory: Path) -> list[Path]:
    """The run's checkpoints, oldest first (temporary files are never listed)."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if NAME.match(p.name)]
    return sorted(found, key=lambda p: int(NAME.match(p.name).group(1)))


def list_preempted(directory: Path) -> list[Path]:
    """Mid-epoch checkpoints written on a stop signal (preempt-step-NNNNNNNN.pt), oldest first."""
    return sorted(directory.glob("preempt-step-*.pt")) if directory.is_dir() else []


def load_newest(directory: Path) -> tuple[Path, dict] | None:
    """The newest checkpoint that loads (a mid-epoch one first); unreadable ones are skipped with a warning."""
    for path in [*reversed(list_preempted(directory)), *reversed(list_checkpoints(directory))]:
        try:
            return path, load(path)
        except UserError as error:
            log.warning("skipping %s", error)
    return None
