"""Validate the composed config before any work: `python -m runner trainer.batch_size=100 ...`.

Every rule names the key, the bad value and the fix in one line, raised as a UserError:

    trainer.batch_size=100 is not a multiple of trainer.micro_batch_size=32. Fix: ...
"""

from __future__ import annotations

import signal
from pathlib import Path

from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from runner.data.datasets import DATASETS
from runner.errors import UserError
from runner.training import distributed

PRECISIONS = ("auto", "32", "bf16", "16")


def register_configs() -> None:
    """What Hydra must know before it composes: the `${run_id:}` resolver (run folder names, see
    run_folders.run_id) and the settings schemas. Every entry point and the tests call this first."""
    from runner.run_folders import run_id

    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", run_id, use_cache=True)


def _fail(key: str, value, problem: str, fix: str):
    raise UserError(f"{key}={value!r} {problem}. Fix: {fix}")


def _int_at_least(cfg: DictConfig, key: str, minimum: int, fix: str) -> None:
    value = OmegaConf.select(cfg, key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        _fail(key, value, f"must be an integer >= {minimum}", fix)


def _positive_number(cfg: DictConfig, key: str, fix: str, allow_zero: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        _fail(key, value, "must be a number " + (">= 0" if allow_zero else "> 0"), fix)


def _target(cfg: DictConfig, group: str, choices: str) -> None:
    target = cfg[group].get("_target_")
    try:
        get_method(target)
    except Exception:
        _fail(f"{group}._target_", target, "cannot be imported", f"pick one of the {group} configs ({choices})")


def missing_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Dotted keys left at ??? (without resolving interpolations that point at them)."""
    found = []
    for key in cfg:
        if OmegaConf.is_missing(cfg, key):
            found.append(f"{prefix}{key}")
        elif isinstance(cfg._get_node(key), DictConfig):
            found += missing_keys(cfg._get_node(key), f"{prefix}{key}.")
    return found


def _batch_divides(batch_size: int, micro_batch_size: int, processes: int) -> None:
    """Each process's share of a learning batch is a whole number of micro-batches."""
    if batch_size % (micro_batch_size * processes) == 0:
        return
    if processes == 1:
        divisors = [d for d in range(1, batch_size + 1) if batch_size % d == 0]
        raise UserError(
            f"trainer.batch_size={batch_size} is not a multiple of trainer.micro_batch_size={micro_batch_size}. "
            f"Fix: set trainer.micro_batch_size to a divisor of {batch_size} "
            f"(e.g. {', '.join(map(str, divisors[-4:-1] or divisors))})"
        )
    raise UserError(f"trainer.batch_size={batch_size} is not a multiple of trainer.micro_batch_size="
                    f"{micro_batch_size} x {processes} processes. Fix: a smaller trainer.micro_batch_size, "
                    "or a batch_size that is a multiple of it times the processes")


def validate(cfg: DictConfig) -> None:
    """Raise UserError at the first bad setting; returns None when the config is usable."""
    missing = missing_keys(cfg)
    if missing:
        raise UserError(f"{missing[0]} has no value (???). Fix: set it on the command line, e.g. {missing[0]}=...")

    trainer = cfg.trainer
    _int_at_least(cfg, "trainer.epochs", 1, "trainer.epochs=10")
    _int_at_least(cfg, "trainer.batch_size", 1, "trainer.batch_size=64")
    _int_at_least(cfg, "trainer.micro_batch_size", 1, "trainer.micro_batch_size=64")
    _batch_divides(trainer.batch_size, trainer.micro_batch_size, distributed.from_environment().world_size)
    if str(trainer.precision) not in PRECISIONS:
        _fail("trainer.precision", trainer.precision, "is not known", "trainer.precision=auto, 32, bf16 or 16")
    if trainer.grad_clip_norm is not None:
        _positive_number(cfg, "trainer.grad_clip_norm", "trainer.grad_clip_norm=1.0, or null for no clipping")
    _int_at_least(cfg, "trainer.num_workers", 0, "trainer.num_workers=0 (load in the main process) or more")
    _int_at_least(cfg, "trainer.seed", 0, "trainer.seed=0")
    _int_at_least(cfg, "trainer.log_every_steps", 1, "trainer.log_every_steps=10")
    device = str(trainer.device)
    if not (device in ("auto", "cpu", "cuda", "mps") or (device.startswith("cuda:") and device[5:].isdigit())):
        _fail("trainer.device", device, "is not a device", "trainer.device=auto, cpu, cuda, cuda:N or mps")

    unknown = [name for name in trainer.stop_signals if name not in signal.Signals.__members__]
    if unknown:
        _fail("trainer.stop_signals", list(trainer.stop_signals), f"names unknown signals {unknown}",
              "trainer.stop_signals=[SIGUSR1,SIGTERM]")
    _int_at_least(cfg, "checkpoint.every_epochs", 1, "checkpoint.every_epochs=1")
    if cfg.checkpoint.keep_last is not None:
        _int_at_least(cfg, "checkpoint.keep_last", 1, "checkpoint.keep_last=3, or null to keep all")
    smoothing = cfg.loss.label_smoothing
    if not isinstance(smoothing, (int, float)) or not 0 <= smoothing < 1:
        _fail("loss.label_smoothing", smoothing, "must be in [0, 1)", "loss.label_smoothing=0.1")

    _target(cfg, "optimizer", "adamw, adam, sgd, rmsprop")
    _positive_number(cfg, "optimizer.lr", "optimizer.lr=3e-4 (a positive learning rate)")
    if "weight_decay" in cfg.optimizer:
        _positive_number(cfg, "optimizer.weight_decay", "optimizer.weight_decay=0.01 (or 0)", allow_zero=True)
    _target(cfg, "schedule", "constant, step, cosine, warmup_cosine, onecycle, linear")
    if "warmup_epochs" in cfg.schedule:
        _positive_number(cfg, "schedule.warmup_epochs", "schedule.warmup_epochs=5", allow_zero=True)
    if "step_epochs" in cfg.schedule:
        _positive_number(cfg, "schedule.step_epochs", "schedule.step_epochs=30")

    _validate_dataset(cfg.dataset)
    _target(cfg, "model", "linear, mlp, lenet, convnet, resnet18, resnet50")
    if cfg.model.get("num_classes") != cfg.dataset.num_classes:
        _fail("model.num_classes", cfg.model.get("num_classes"),
              f"does not match dataset.num_classes={cfg.dataset.num_classes}",
              "leave model.num_classes at its default ${dataset.num_classes}")

    if distributed.from_environment().active and cfg.sweep.pruner != "none":
        raise UserError("pruning a sweep trial that trains in several processes is not supported (the pruner "
                        "would stop rank 0 alone). Fix: hydra.sweeper.pruner=none, or one process per trial")
    if cfg.resume is not None and not Path(cfg.resume).is_file():
        _fail("resume", cfg.resume, "is not a file", "resume=PATH/TO/checkpoints/epoch-NNNN.pt, or resume=null")


def _validate_dataset(dataset: DictConfig) -> None:
    if dataset.name not in DATASETS:
        _fail("dataset.name", dataset.name, "is not a known dataset", f"one of {', '.join(DATASETS)}")
    _int_at_least(dataset, "num_classes", 2, "dataset.num_classes=10")
    _int_at_least(dataset, "channels", 1, "dataset.channels=3")
    size = dataset.image_size
    sizes = [size] if isinstance(size, int) else list(size)
    if len(sizes) not in (1, 2) or not all(isinstance(s, int) and s > 0 for s in sizes):
        _fail("dataset.image_size", size, "must be an int or [height, width]", "dataset.image_size=[128,128]")
    for key in ("mean", "std"):
        values = list(dataset[key])
        if len(values) not in (1, dataset.channels):
            _fail(f"dataset.{key}", values, f"needs 1 or {dataset.channels} values (dataset.channels)",
                  f"dataset.{key}=[{', '.join(['0.5'] * dataset.channels)}]")
    if any(s <= 0 for s in dataset.std):
        _fail("dataset.std", list(dataset.std), "must be positive", "use the per-channel standard deviation of the pixels")
    if dataset.subset is not None and (not isinstance(dataset.subset, int) or dataset.subset < 1):
        _fail("dataset.subset", dataset.subset, "must be a positive integer", "dataset.subset=64, or null for all")
    if dataset.augment not in ("none", "basic"):
        _fail("dataset.augment", dataset.augment, "is not known", "dataset.augment=none or dataset.augment=basic")
    if dataset.name == "imagefolder" and not Path(dataset.root).is_dir():
        _fail("dataset.root", dataset.root, "is not a folder",
              "dataset.root=/path/to/images (class subfolders, or train/ and val/ with class subfolders)")
