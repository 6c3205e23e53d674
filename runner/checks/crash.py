"""A check of `python -m runner.check` that raised: whose code raised it, named in the table's row.

An error raised in the model's or the data's code (the deepest frame that is not torch's or
Python's own) will raise in training too: FAIL, naming that place. An error raised in a check's
own code (runner/checks/) says nothing about the model or the data: the check could not judge,
so it is a WARN that names the check's line, to be reported as a bug of the check.
"""

from __future__ import annotations

import sysconfig
import traceback
from pathlib import Path

import torch

CHECKS_DIR = Path(__file__).resolve().parent
LIBRARIES = tuple({Path(sysconfig.get_paths()[key]).resolve() for key in ("stdlib", "purelib", "platlib")}
                  | {Path(torch.__file__).resolve().parent})


def is_library(path: Path) -> bool:
    return any(path.is_relative_to(root) for root in LIBRARIES) and not path.is_relative_to(CHECKS_DIR.parent)


def raising_frame(error: BaseException) -> tuple[Path, int, str] | None:
    """(file, line, Class.function) of the deepest frame outside Python's and torch's own code: the cause."""
    frames = [(Path(frame.f_code.co_filename).resolve(), line, frame.f_code.co_qualname)
              for frame, line in traceback.walk_tb(error.__traceback__)]
    frames = [f for f in frames if not is_library(f[0])]
    return frames[-1] if frames else None


def crash_row(error: BaseException):
    """(figure, expected, verdict, fix) of a check that raised `error`."""
    message = f"{type(error).__name__}: {error}"
    frame = raising_frame(error)
    where = "an unknown place" if frame is None else f"{frame[0]}:{frame[1]} ({frame[2]})"
    if frame is not None and frame[0].is_relative_to(CHECKS_DIR):
        return (f"the check crashed in its own code: {message}", "to run", "WARN",
                f"a bug in the check, not in the model or data (raised at "
                f"{frame[0].relative_to(CHECKS_DIR.parent.parent)}:{frame[1]} in {frame[2]}): the check could not "
                "judge; report it, and rerun without it (checks=[...])")
    return (f"crashed: {message}", "to run", "FAIL",
            f"raised in {where}, code that training runs too: fix it there (it would crash the training the same way)")
