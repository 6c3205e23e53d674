"""Checkpoint files: names, atomic save, safe load, discovery. Written by `python -m runner` into
RUN/checkpoints/, read by `python -m runner.evaluate`.

A checkpoint is a plain dict of tensors and primitives (loadable with
`torch.load(path, weights_only=True)`) named `epoch-NNNN.pt` after the number of completed
epochs (or `preempt-step-NNNNNNNN.pt` when a stop signal came mid-epoch). It is written
through `io.write_atomic`, so a crash at any moment leaves each name absent or complete.
"""
from __future__ import annotations

import errno
import logging
import re
import shutil
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
    """Write `state` to `path` so that `path` is never seen half-written; first clear what killed writers left.

    A full disk or a missing permission is a UserError naming the file, the size and the checkpoint
    that stays intact; the half-written temporary file is gone.
    """
    remove_stale_temporaries(path.parent)
    try:
        write_atomic(path, lambda file: torch.save(state, file))
    except (OSError, RuntimeError) as error:
        problem = write_problem(error)
        if problem is None:
            raise
        previous = [p.name for p in list_checkpoints(path.parent) if p != path]
        kept = f"{previous[-1]} is intact" if previous else "no earlier checkpoint was touched"
        free = shutil.disk_usage(path.parent).free / 1e6
        fix = ("make the folder writable, or run elsewhere (hydra.run.dir=...)" if problem == "permission denied"
               else "free space on that device, or lower checkpoint.keep_last")
        raise UserError(f"{problem} in {path.parent} while writing {path.name} (about {state_bytes(state) / 1e6:.0f} "
                        f"MB needed, {free:.0f} MB free); {kept}. Fix: {fix}") from None


def write_problem(error: Exception) -> str | None:
    """What a failed write means for the user, or None for an error that is not about the disk."""
    if isinstance(error, PermissionError) or getattr(error, "errno", None) in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied"
    if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the device"
    # torch.save reports a full disk as "[enforce fail at inline_container.cc] . unexpected pos ..."
    if isinstance(error, RuntimeError) and ("unexpected pos" in str(error) or "file write failed" in str(error)):
        return "no space left on the device"
    return None


def state_bytes(state) -> int:
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_bytes(value) for value in state.values())
    if isinstance(state, list | tuple):
        return sum(state_bytes(value) for value in state)
    return 0


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
