"""An exclusive lock on a file, between processes on one machine or one shared filesystem.

Used by `python -m runner.evaluate` (one evaluator per run) and the sweeper (one worker at a
time asks the study for trials).
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an flock on `path` (created, with its folder, if missing) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
