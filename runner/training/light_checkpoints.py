"""Light checkpoints of `python -m runner checkpoint.every_updates=N`: the weights every N optimizer updates,
for the evaluator's prediction dynamics and first-layer filters at finer steps than the epochs.

    checkpoints/updates/update-00000000.pt    the initial weights of a fresh run (before the first update)
    checkpoints/updates/update-NNNNNNNN.pt    the weights after update NNNNNNNN (a multiple of N)

Each holds what a full checkpoint holds for the evaluator (format_version, epoch, global_step, model,
config, provenance; runner/evaluation's model_of_checkpoint rebuilds the model from it) and `"light": True`,
without the optimizer, schedule, scaler, random streams or averaged weights. A resume never starts from one:
runner/training/checkpoint.py's find_resume_state reads checkpoints/ only, not this folder, and resume= naming
one is refused (checkpoint_settings.py). Writing one reads the weights and draws no random number, so a run
trains the same weights with and without them; a resumed run writes again those after its checkpoint (the
same weights, over those its killed attempt left). Rank 0 writes, atomically (runner/common/checkpoint_files.py);
`checkpoint.keep_updates=K` keeps the newest K and update-00000000.pt.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from omegaconf import OmegaConf

from runner.common import checkpoint_files
from runner.common.checkpoint_files import save_atomic
from runner.training.checkpoint_settings import LIGHT_NAME as NAME

log = logging.getLogger(__name__)

FOLDER = "updates"  # under the run's checkpoints/


def update_name(global_step: int) -> str:
    return f"update-{global_step:08d}.pt"


def light_state(cfg, model: torch.nn.Module, epoch: int, global_step: int, provenance: dict,
                epoch_samples: int = 0) -> dict:
    """The weights with what the evaluator needs to rebuild and place them; `epoch`: completed epochs,
    `epoch_samples`: samples trained in the epoch under way."""
    return {
        "format_version": checkpoint_files.FORMAT_VERSION,
        "light": True,
        "epoch": epoch,
        "epoch_samples": epoch_samples,
        "global_step": global_step,
        "model": model.state_dict(),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "provenance": json.loads(json.dumps(provenance, default=str)),  # plain types: loads with weights_only
    }


def due(every_updates: int | None, global_step: int) -> bool:
    return every_updates is not None and global_step % every_updates == 0


def write(run, epoch: int, epoch_samples: int = 0) -> Path | None:
    """The run's weights now as a light checkpoint (rank 0), then retention; None where another rank or
    where the weights are not finite (the loop's next read of the figures stops the run and says why)."""
    if not run.processes.is_main:
        return None
    if not bool(torch.stack([torch.isfinite(p).all() for p in run.model.parameters()]).all()):
        log.warning("the weights are not finite after update %d: no light checkpoint", run.global_step)
        return None
    folder = run.run_dir / "checkpoints" / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / update_name(run.global_step)
    save_atomic(light_state(run.cfg, run.model, epoch, run.global_step, run.provenance, epoch_samples), path)
    prune(folder, run.checkpoints.keep_updates)
    return path


def list_updates(folder: Path) -> list[Path]:
    """The light checkpoints, oldest first (temporary files are never listed)."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if NAME.match(p.name)]
    return sorted(found, key=lambda p: int(p.stem.removeprefix("update-")))


def prune(folder: Path, keep: int | None) -> None:
    """All but the newest `keep` light checkpoints deleted; the initial weights (update-00000000.pt) kept."""
    if keep is None:
        return
    for path in list_updates(folder)[:-keep]:
        if path.name != update_name(0):
            path.unlink()


def describe(every_updates: int | None, keep_updates: int | None) -> str | None:
    """The plan's line (None: off)."""
    if every_updates is None:
        return None
    kept = "all kept" if keep_updates is None else f"the newest {keep_updates} and the initial weights kept"
    return (f"light checkpoints (weights only) every {every_updates} update{'s' * (every_updates != 1)} in "
            f"checkpoints/{FOLDER}/ ({kept}; checkpoint.every_updates, checkpoint.keep_updates)")
