"""Checkpoints: atomic save, safe load, discovery. Written by `python -m runner` into RUN/checkpoints/.

A checkpoint is a plain dict of tensors and primitives (loadable with
`torch.load(path, weights_only=True)`) named `epoch-NNNN.pt` after the number of completed
epochs. It is written to a temporary file in the same folder, flushed, fsynced and then
renamed over its final name, so a crash at any moment leaves each name absent or complete.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from runner.errors import UserError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
NAME = re.compile(r"^epoch-(\d+)\.pt$")


def checkpoint_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}.pt"


def save_atomic(state: dict, path: Path) -> None:
    """Write `state` to `path` so that `path` is never seen half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)


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


def remove_preempted(directory: Path) -> None:
    """Once a later epoch checkpoint exists, the mid-epoch ones before it are stale."""
    for path in list_preempted(directory):
        path.unlink()


def load_newest(directory: Path) -> tuple[Path, dict] | None:
    """The newest checkpoint that loads (a mid-epoch one first); unreadable ones are skipped with a warning."""
    for path in [*reversed(list_preempted(directory)), *reversed(list_checkpoints(directory))]:
        try:
            return path, load(path)
        except UserError as error:
            log.warning("skipping %s", error)
    return None


def prune(directory: Path, keep_last: int | None, protect: Path | None = None) -> None:
    """Delete all but the newest `keep_last` checkpoints (never `protect`)."""
    if keep_last is None:
        return
    for path in list_checkpoints(directory)[:-keep_last]:
        if path != protect:
            path.unlink()
            log.info("deleted old checkpoint %s (checkpoint.keep_last=%d)", path.name, keep_last)


def rng_state() -> dict:
    """Every random number generator the run uses, as tensors and primitives."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state({
        "bit_generator": "MT19937",
        "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
        "has_gauss": numpy_state["has_gauss"],
        "gauss": numpy_state["gauss"],
    })
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
