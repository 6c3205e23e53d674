"""python -m runner.evaluate run_dir=RUN [weights=all|raw|ema|swa]: which weights of a checkpoint are evaluated.

A checkpoint holds the raw weights (`"model"`) and, when training averaged them, the averages
beside them: `"averaged": {"ema": state_dict, "swa": state_dict}` (only those that exist). Each
is evaluated as a row of its own, its `weights` column "raw", "ema" or "swa"; the run's best is
chosen among all of them. EMA weights are evaluated as saved (their BatchNorm buffers are the raw
model's, copied). SWA weights are an average of weights the running BatchNorm statistics were
never measured with, so before they are evaluated those statistics are recomputed here, offline,
over the training split without augmentation, as torch.optim.swa_utils.update_bn does it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from runner.common import checkpoint_files
from runner.common.errors import UserError
from runner.common.run_folders import relative
from runner.data import loaders
from runner.evaluation import results
from runner.evaluation.run_dirs import run_checkpoints
from runner.evaluation.weight_names import WEIGHTS
from runner.models import batch_norm

log = logging.getLogger("runner.evaluate")

def held(state: dict, path) -> dict[str, dict]:
    """{"raw": state_dict, "ema": ..., "swa": ...}: the weights a loaded checkpoint holds, raw first.

    An `averaged` entry that is not a state dict of tensors is left out with a warning naming it:
    the checkpoint's other weights are evaluated all the same."""
    found = {"raw": state["model"]}
    averaged = state.get("averaged") or {}
    if not isinstance(averaged, dict):
        log.warning("%s: its averaged weights are a %s, not a mapping of ema/swa state dicts: left out, the raw "
                    "weights evaluated", path, type(averaged).__name__)
        return found
    for name, weights in averaged.items():
        if name not in WEIGHTS[1:]:
            log.warning("%s holds averaged weights %r, not one of ema, swa: left out", path, name)
        elif not isinstance(weights, dict) or not weights or \
                not all(isinstance(value, torch.Tensor) for value in weights.values()):
            log.warning("%s: its %s weights are not a state dict of tensors: left out", path, name)
        else:
            found[name] = weights
    return {name: found[name] for name in WEIGHTS if name in found}


def batch_norm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return batch_norm.batch_norm_modules(model)


def recompute_batch_norm(model: nn.Module, batches, device: torch.device) -> bool:
    """The model's BatchNorm statistics measured again over a loader's (x, y) batches, moved to `device`
    (runner/models/batch_norm.py: update_bn's semantics); False, untouched, when it has none."""
    return batch_norm.recompute_statistics(model, (loaders.on_device(x, device) for x, _ in batches))


def refuse_weights_not_held(run_dir: Path, rows: list[dict], asked: tuple[str, ...], only: Path | None) -> None:
    """weights=swa on a run that kept no SWA: one line naming what its checkpoints hold, not an empty table."""
    if "raw" in asked:  # every checkpoint holds its raw weights
        return
    held = weights_in(run_dir, rows, [only] if only else run_checkpoints(run_dir))
    if not held or any(w in held for w in asked):
        return
    fix = "trainer.swa.start_epoch=K" if asked == ("swa",) else "trainer.ema.decay=0.999"
    said = f"{only} holds no {asked[0]} weights (it holds" if only else \
        f"no checkpoint of {run_dir} holds {asked[0]} weights (they hold"
    raise UserError(f"{said} {', '.join(held)}). Fix: weights=all, or train with {fix}")


def weights_in(run_dir: Path, rows: list[dict], paths: list[Path]) -> list[str]:
    """The weights the checkpoints in paths hold, in WEIGHTS order: as their rows recorded them, else as the file
    holds them (a checkpoint never evaluated: nothing of the asked weights was there to evaluate)."""
    recorded = results.weights_held(rows)
    found: set[str] = set()
    for path in paths:
        name = relative(path, run_dir)
        if name in recorded:
            found.update(recorded[name])
            continue
        try:
            found.update(held(checkpoint_files.load(path, parts=checkpoint_files.EVALUATED_PARTS), path))
        except UserError:  # unreadable: warned about where it was skipped
            continue
    return [w for w in WEIGHTS if w in found]
