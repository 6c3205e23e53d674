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

from runner.common.errors import UserError
from runner.common.io import remove_stale_temporaries, write_atomic
from runner.common.trust import keyword_arguments

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


def load(path: Path, map_location="cpu", parts: tuple[str, ...] | None = None) -> dict:
    """Load a checkpoint with weights_only=True and check its shape; anything else is a one-line UserError.

    Refused: a truncated or foreign file, a pickle, and a checkpoint whose parts are not what runner
    writes (see `check_state`): weights without data (on the meta device), an epoch that is not a
    whole number, a saved model config with a key its model builder does not take. The evaluator
    skips such a file with the reason and goes on; `resume=` stops with it. `parts`: those the caller
    needs (EVALUATED_PARTS, ...); a checkpoint that lacks one is refused too. By default a training
    checkpoint (one with any of TRAINING_PARTS) must have them all: a resume restores every one.
    """
    fix = "delete it, or pick another file from the run's checkpoints/"
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist. Fix: give the path of an epoch-NNNN.pt file") from None
    except IsADirectoryError:
        raise UserError(f"checkpoint {path} is a folder. Fix: give the path of an epoch-NNNN.pt file") from None
    except Exception as error:
        first = first_sentence(error)
        raise UserError(f"checkpoint {path} is truncated or not a checkpoint ({type(error).__name__}: {first}). "
                        f"Fix: {fix}") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path} is not a runner checkpoint (no format_version {FORMAT_VERSION}). Fix: pick a file written by runner")
    if parts is None:
        parts = TRAINING_PARTS if any(part in state for part in TRAINING_PARTS) else ()
    missing = [part for part in parts if part not in state]
    problem = check_state(state) or (f"lacks {', '.join(missing)}" if missing else None)
    if problem is not None:
        raise UserError(f"checkpoint {path} {problem}. Fix: {fix}")
    return state


# the parts of a training checkpoint (runner/training/checkpoint.py: training_state), each checked when present
PART_TYPES = {"epoch": int, "global_step": int, "model": dict, "optimizer": dict, "schedule": dict, "scaler": dict,
              "rng": dict, "config": dict, "provenance": dict}
EVALUATED_PARTS = ("epoch", "global_step", "model", "config")  # what the evaluator reads
TRAINING_PARTS = (*EVALUATED_PARTS, "optimizer", "schedule", "scaler", "rng")  # what a resume restores
CONFIG_BLOCKS = ("model", "dataset", "trainer")
# keys of a model config that Hydra or runner.models.build consume, not the builder (runner/config/schema.py's NOT_ARGUMENTS)
NOT_ARGUMENTS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_", "init_output_bias"}  # what the evaluator and a resume build from the saved config


def check_state(state: dict) -> str | None:
    """What is wrong with a loaded checkpoint's parts, in words; None when nothing is."""
    for part, kind in PART_TYPES.items():
        if part not in state:
            continue
        value = state[part]
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"has {part}={short(value)} (a {type(value).__name__}; a {kind.__name__} expected)"
        if kind is int and value < 0:
            return f"has {part}={value} (negative)"
    for key, value in state.get("model", {}).items():
        if not isinstance(value, torch.Tensor):
            return f"has model weight {key!r} = {short(value)}, not a tensor"
    meta = next(iter(meta_tensors(state)), None)
    if meta is not None:
        return (f"holds {meta} on the meta device: a tensor with a shape and no values (written from a model that "
                "was never materialized)")
    if "config" in state:
        return check_config(state["config"])
    return None


def check_config(config: dict) -> str | None:
    for block in CONFIG_BLOCKS:
        if not isinstance(config.get(block), dict):
            return f"has config.{block}={short(config.get(block))} in its saved config (a mapping expected)"
    trainer, dataset = config["trainer"], config["dataset"]
    for key, least in (("micro_batch_size", 1), ("num_workers", 0)):
        value = trainer.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            return f"has config.trainer.{key}={short(value)} in its saved config (a whole number >= {least} expected)"
    if not isinstance(dataset.get("num_classes"), int) or isinstance(dataset.get("num_classes"), bool):
        return f"has config.dataset.num_classes={short(dataset.get('num_classes'))} in its saved config"
    model = config["model"]
    target = model.get("_target_")
    if not isinstance(target, str):
        return f"has config.model._target_={short(target)} in its saved config (a module.function expected)"
    arguments = builder_arguments(target)
    if arguments is not None:
        for key in model:
            if key not in arguments and key not in NOT_ARGUMENTS:
                return (f"has a saved config whose model.{key}={short(model[key])} is not an argument of {target} "
                        f"(it takes {', '.join(arguments)})")
    return None


def builder_arguments(target: str) -> list[str] | None:
    """The keyword arguments of runner's or torchvision's model builder `target`; None for any other callable
    (it is not imported before the user trusts it: runner/common/trust.py) or one that takes **kwargs."""
    import importlib

    module, _, name = target.rpartition(".")
    if module not in ("runner.models", "torchvision.models"):
        return None
    function = getattr(importlib.import_module(module), name, None)
    if not callable(function):
        return None
    return keyword_arguments(function)


def meta_tensors(node, key: str = ""):
    """The dotted keys of the tensors on the meta device, at any depth."""
    if isinstance(node, torch.Tensor):
        if node.is_meta:
            yield key or "a tensor"
    elif isinstance(node, dict):
        for child, value in node.items():
            yield from meta_tensors(value, f"{key}.{child}" if key else str(child))
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            yield from meta_tensors(value, f"{key}[{index}]")


def first_sentence(error: Exception) -> str:
    """The gist of a library's error: its first sentence, on one line (torch's can run to twenty)."""
    text = " ".join(str(error).split())
    return text.split(". ", 1)[0][:160]


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def list_checkpoints(directory: Path) -> list[Path]:
    """The run's checkpoints, oldest first (temporary files are never listed)."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if NAME.match(p.name)]
    return sorted(found, key=lambda p: int(NAME.match(p.name).group(1)))


def list_preempted(directory: Path) -> list[Path]:
    """Mid-epoch checkpoints written on a stop signal (preempt-step-NNNNNNNN.pt), oldest first."""
    return sorted(directory.glob("preempt-step-*.pt")) if directory.is_dir() else []


def load_newest(directory: Path, parts: tuple[str, ...] | None = None) -> tuple[Path, dict] | None:
    """The newest checkpoint that loads (a mid-epoch one first); unreadable ones are skipped with a warning."""
    for path in [*reversed(list_preempted(directory)), *reversed(list_checkpoints(directory))]:
        try:
            return path, load(path, parts=parts)
        except UserError as error:
            log.warning("skipping %s", error)
    return None
