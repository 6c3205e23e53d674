"""The training state a checkpoint holds, and the checkpoints' retention. Used by the loop
(`training/loop.py`) and the job (`training/job.py`) of `python -m runner`.

`training_state` gathers everything a bit-identical resume needs (model, optimizer, schedule,
scaler, every RNG, the resolved config); `restore` puts it back, the RNG last.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch

from runner.checkpoint_files import (
    list_checkpoints,
    list_preempted,
)

log = logging.getLogger(__name__)


def remove_preempted(directory: Path) -> None:
    """Once a later epoch checkpoint exists, the mid-epoch ones before it are stale."""
    for path in list_preempted(directory):
        path.unlink()


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
