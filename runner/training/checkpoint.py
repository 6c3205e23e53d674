"""The training state a checkpoint holds, which checkpoint a run resumes from, and retention.
Used by the loop (`training/loop.py`) and the job (`training/job.py`) of `python -m runner`.

`training_state` gathers everything a bit-identical resume needs (model, optimizer, schedule,
scaler, every RNG, the resolved config, the averaged weights); `restore` puts it back, the RNG last.
With trainer.ema or trainer.swa a checkpoint also holds `averaged: {"ema": state_dict, "swa": state_dict}`
(each that exists: swa once an epoch is averaged) and `averaging: {"ema": {"updates", "decay"}, "swa":
{"count"}}` (training/averaging.py); without them neither key.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from runner.common import checkpoint_files
from runner.common.checkpoint_files import list_checkpoints, list_preempted
from runner.common.errors import UserError
from runner.common.io import remove_stale_temporaries
from runner.common.rules import may_change_on_resume
from runner.common.run_folders import relative
from runner.training import averaging
from runner.training.optim import depends_on_total_epochs

log = logging.getLogger(__name__)



def training_state(cfg, model, optimizer, schedule, scaler, epoch: int, global_step: int, provenance: dict,
                   rng_by_rank: list[dict] | None = None, averages: averaging.Averages | None = None) -> dict:
    """`rng_by_rank`: every process's random streams (torchrun), which part ways where their shares differ;
    `averages`: the EMA and SWA copies (training/averaging.py)."""
    return {
        "format_version": checkpoint_files.FORMAT_VERSION,
        "epoch": epoch,
        "global_step": global_step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng_state(),
        "rng_by_rank": rng_by_rank or [],
        "config": OmegaConf.to_container(cfg, resolve=True),
        # plain JSON types only, so the file loads with weights_only=True
        "provenance": json.loads(json.dumps(provenance, default=str)),
        **averaging.checkpoint_parts(averages or averaging.Averages()),
    }


def restore(state: dict, model, optimizer, schedule, scaler, rank: int = 0, world_size: int = 1,
            averages: averaging.Averages | None = None) -> tuple[int, int]:
    """Load a checkpoint's full state (RNG last: this process's own); returns (completed epochs, global step)."""
    model.load_state_dict(state["model"])
    averaging.restore(averages or averaging.Averages(), state)
    refuse_other_parameter_groups(state["optimizer"], optimizer)
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    if state["scaler"] or not scaler.is_enabled():
        scaler.load_state_dict(state["scaler"])
    else:  # written without fp16 (CPU, bf16, fp32), resumed where the precision is fp16
        log.info("the checkpoint has no gradient scaler state (it trained without fp16): a fresh gradient scaler")
    by_rank = state.get("rng_by_rank") or []
    if by_rank and len(by_rank) != world_size:
        log.warning("the checkpoint was written by %d processes, this run has %d: every process resumes rank 0's "
                    "random streams, so the run is not the uninterrupted one", len(by_rank), world_size)
    set_rng_state(by_rank[rank] if len(by_rank) == world_size else state["rng"])
    return state["epoch"], state["global_step"]


def refuse_other_parameter_groups(saved: dict, optimizer) -> None:
    """The optimizer's parameter groups (training/param_groups.py) as the checkpoint has them, in one line:
    a checkpoint written before norm and bias lost their weight decay has one group where runner now makes two."""
    written, now = len(saved["param_groups"]), len(optimizer.param_groups)
    if written != now or any(len(a["params"]) != len(b["params"])
                             for a, b in zip(saved["param_groups"], optimizer.param_groups, strict=True)):
        raise UserError(
            f"the checkpoint's optimizer has {written} parameter group{'s' * (written != 1)}, this config makes "
            f"{now} (optimizer.no_decay_norm_and_bias, optimizer.layer_decay and finetune.lr_mult split the "
            "parameters; a checkpoint written before runner split them has one). Fix: optimizer.no_decay_norm_and_bias"
            "=false to resume a checkpoint written before, or resume with the settings it was written with")


def find_resume_state(cfg: DictConfig, run_dir: Path) -> tuple[dict | None, str | None]:
    """The checkpoint to continue from: the newest in this run directory, else resume=PATH (never a light one:
    checkpoints/updates/ is not read, training/light_checkpoints.py).

    resume=PATH only seeds a run folder with no checkpoint of its own (as torchtitan's initial load
    path): a SLURM requeue reruns the same command and must continue the run, not go back to PATH.
    Returns (its state, its path relative to run_dir); a checkpoint written with settings that
    change what is computed is refused, with the differences named.
    """
    remove_stale_temporaries(run_dir / "checkpoints")  # saves a kill -9 interrupted: never complete
    found = checkpoint_files.load_newest(run_dir / "checkpoints")
    if found is not None and cfg.resume is not None:
        log.info("resume=%s is not used: this run folder has checkpoints of its own (resume= only seeds a "
                 "new run folder)", cfg.resume)
    if found is None and cfg.resume is not None:
        found = Path(cfg.resume), checkpoint_files.load(Path(cfg.resume))
    if found is None:
        return None, None
    path, state = found
    current = OmegaConf.to_container(cfg, resolve=True)
    # the schemas mark what may change (runner/common/rules.py: resumable): nothing computed depends on it
    changes = [c for c in changed_settings(state["config"], current) if not may_change_on_resume(cfg, c.split(":")[0])]
    if changes:
        raise UserError(
            f"{path} was written with a different config ({'; '.join(changes[:5])}). Fix: rerun with the "
            "run's own settings, or start a new run directory (drop hydra.run.dir=...)"
        )
    refuse_a_schedule_stretched(cfg, state["config"]["trainer"]["epochs"], path)
    warn_of_other_threads(state, path)
    added = added_settings(state["config"], current)
    if added:
        log.warning("settings added since the checkpoint was written, taken as now: %s", ", ".join(added))
    log.info("resuming from %s (epoch %d, step %d)", path, state["epoch"], state["global_step"])
    return state, relative(path, run_dir)


def refuse_weights_that_do_not_fit(state: dict, model: torch.nn.Module, path: str) -> None:
    """The checkpoint's weights against the model built from this config, named in one line before any work
    (load_state_dict's own error is a multi-line traceback at the first step)."""
    expected, saved = model.state_dict(), state["model"]
    problems = [f"{key} missing" for key in expected if key not in saved]
    problems += [f"{key} not in the model" for key in saved if key not in expected]
    problems += [f"{key} of shape {tuple(value.shape)}, the model's {tuple(expected[key].shape)}"
                 for key, value in saved.items() if key in expected and value.shape != expected[key].shape]
    if problems:
        raise UserError(f"{path}'s weights do not fit the model this config builds ({'; '.join(problems[:3])}"
                        f"{f' and {len(problems) - 3} more' if len(problems) > 3 else ''}). Fix: resume with the "
                        "settings it was written with, or train in a new run folder without resume=")


def refuse_a_schedule_stretched(cfg: DictConfig, written_epochs: int, path: Path) -> None:
    """trainer.epochs may change on resume, but a schedule written in total epochs (cosine at 2 of 4 is
    half the lr, at 1.99 of 2 nearly zero) would jump mid-run and the run be recorded as one it was not."""
    if written_epochs == cfg.trainer.epochs or not depends_on_total_epochs(cfg.schedule, written_epochs,
                                                                          cfg.trainer.epochs):
        return
    name = str(cfg.schedule._target_).rsplit(".", 1)[-1]
    raise UserError(
        f"{path} was written for trainer.epochs={written_epochs}, and schedule={name} is written in the run's "
        f"total epochs: resuming with trainer.epochs={cfg.trainer.epochs} would make the learning rate jump. "
        f"Fix: keep trainer.epochs={written_epochs}, or train trainer.epochs={cfg.trainer.epochs} in a new run "
        "folder (a schedule that does not depend on the total, schedule=constant or step, can be extended)")


def warn_of_other_threads(state: dict, path: Path) -> None:
    """Float sums depend on the CPU thread count: a resume with another one is exact only to rounding."""
    environment = state.get("provenance", {}).get("environment", {})
    written = environment.get("torch_threads") if isinstance(environment, dict) else None
    now = torch.get_num_threads()
    if isinstance(written, int) and written != now:
        log.warning("%s was written with %d CPU thread%s, this process uses %d: sums are added in another order, "
                    "so the resumed weights can differ from an uninterrupted run's in the last bits. Fix, for "
                    "bit-identical weights: trainer.num_threads=%d", path.name, written, "s" * (written != 1), now,
                    written)


def changed_settings(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config containers (a key the old one lacks is
    not a change: see added_settings)."""
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += changed_settings(a, b, f"{prefix}{key}.")
        elif a != b and key in old:
            changes.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return changes


def added_settings(old: dict, new: dict, prefix: str = "") -> list[str]:
    """`key=value` of the settings a checkpoint's config lacks: written by a runner that had none such."""
    added = []
    for key in sorted(new):
        if key not in old:
            added.append(f"{prefix}{key}={new[key]!r}")
        elif isinstance(old[key], dict) and isinstance(new[key], dict):
            added += added_settings(old[key], new[key], f"{prefix}{key}.")
    return added


def remove_preempted(directory: Path) -> None:
    """Once a later epoch checkpoint exists, the mid-epoch ones before it are stale."""
    for path in list_preempted(directory):
        path.unlink()


def prune(directory: Path, keep_last: int | None, protect: set[Path] = frozenset()) -> None:
    """Delete all but the newest `keep_last` checkpoints, never one in `protect` (the best so far)."""
    if keep_last is None:
        return
    for path in list_checkpoints(directory)[:-keep_last]:
        if path not in protect:
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
        # this process's own GPU only: under torchrun each process has one, and another machine may have fewer
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
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
        # one state: this process's GPU; older checkpoints held every visible GPU's, indexed by device
        saved = state["cuda"]
        index = 0 if len(saved) == 1 else torch.cuda.current_device()
        if index < len(saved):
            torch.cuda.set_rng_state(saved[index])
