"""Which run `python -m runner.evaluate` evaluates (run_dir=, or checkpoint=FILE's run) and its checkpoints.

A run's records name only its own checkpoints: checkpoint=FILE outside run_dir=, or a checkpoint
file that is a link out of the run, is refused or left out in one line.
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig

from runner.common import checkpoint_files
from runner.common.errors import UserError
from runner.common.run_folders import relative
from runner.evaluation import results

LIGHT = re.compile(r"^update-\d+\.pt$")  # checkpoint.every_updates' checkpoints/updates/update-NNNNNNNN.pt


def refuse_light(path: Path) -> None:
    """A light checkpoint (checkpoints/updates/) is for eval/dynamics.png alone: never a row, never the run's best."""
    if LIGHT.match(path.name) or (path.parent.name == "updates" and path.parent.parent.name == "checkpoints"):
        raise UserError(f"checkpoint={path} is a light checkpoint (checkpoint.every_updates), for the dynamics only: "
                        "nothing was evaluated. Fix: give an epoch-NNNN.pt, or evaluate the run: its light "
                        "checkpoints feed eval/dynamics.png")


def run_directory(settings: DictConfig) -> Path:
    """The run to evaluate: run_dir, or the run that holds checkpoint=PATH."""
    if settings.get("checkpoint"):
        path = Path(settings.checkpoint)
        if not path.is_file():
            raise UserError(f"checkpoint={settings.checkpoint} does not exist. Fix: give a checkpoints/epoch-NNNN.pt file")
        refuse_light(path)
        if not settings.get("run_dir"):
            return path.parent.parent if path.parent.name == "checkpoints" else path.parent
        run_dir = Path(settings.run_dir)
        if not results.inside_run(run_dir, relative(path, run_dir)):
            raise UserError(f"checkpoint={settings.checkpoint} lies outside run_dir={settings.run_dir}: a run's "
                            "ranking, best.json and test ledger hold only its own checkpoints, so nothing was "
                            f"evaluated. Fix: evaluate it in its own run (drop run_dir=), or copy it into "
                            f"{run_dir / 'checkpoints'}/")
        return run_dir
    if not settings.get("run_dir"):
        raise UserError("no run to evaluate. Fix: run_dir=outputs/<name>/<time> (or checkpoint=FILE)")
    run_dir = Path(settings.run_dir)
    if not run_dir.is_dir() or not ((run_dir / "checkpoints").is_dir() or (run_dir / ".hydra").is_dir()):
        raise UserError(f"run_dir={settings.run_dir} is not a run directory (no checkpoints/ or .hydra/ in it). "
                        "Fix: run_dir=outputs/<name>/<time>, a folder that `python -m runner` printed")
    return run_dir


def run_checkpoints(run_dir: Path) -> list[Path]:
    """The run's epoch checkpoints, oldest first (one still being written is a temporary file, not listed).

    A checkpoint that is a link to a file outside the run is left out with a warning: a run's records
    name only its own checkpoints.
    """
    listed = checkpoint_files.list_checkpoints(run_dir / "checkpoints")
    for path in listed:
        if not results.inside_run(run_dir, relative(path, run_dir)):
            results.warn_once(f"{path} is a link to {path.resolve()}, outside the run: not evaluated. Fix: copy the "
                              "file into the run instead of linking it")
    return [path for path in listed if results.inside_run(run_dir, relative(path, run_dir))]
