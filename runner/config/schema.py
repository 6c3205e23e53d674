"""The composed config's schema and its validation, before any work: `python -m runner trainer.batch_size=100 ...`.

Each settings block's schema and rules live beside the component that owns it
(training/settings.py, data/settings.py, evaluation/settings.py, checks/settings.py); this
module assembles them into the schema of conf/train.yaml, registers the schemas with Hydra,
and runs every rule. A problem is one line naming the key, the bad value and the fix:

    trainer.batch_size=100 is not a multiple of trainer.micro_batch_size=32. Fix: ...
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any  # noqa: UP035 (OmegaConf reads these annotations at run time)

from hydra._internal.utils import _locate
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from runner.checks.settings import ChecksSettings, LrFindSettings
from runner.checks.settings import validate as validate_checks
from runner.common.errors import UserError
from runner.common.rules import fail, resumable
from runner.common.trust import keyword_arguments
from runner.data.settings import SCHEMAS as DATASET_SCHEMAS
from runner.data.settings import DatasetSettings, class_folders, refuse_micro_batches_of_one
from runner.data.settings import validate as validate_dataset
from runner.evaluation.settings import EvaluateCommand, TrainingEvaluation
from runner.evaluation.settings import validate as validate_evaluation
from runner.tracking.settings import LoggerSettings
from runner.tracking.settings import validate as validate_logger
from runner.training.settings import (
    CheckpointSettings,
    FinetuneSettings,
    SweepLink,
    TrainerSettings,
)
from runner.training.settings import validate as validate_training

# absolute: given a relative path, Hydra reads it as a Python package when the entry is a console command
CONF = str(Path(__file__).resolve().parents[2] / "conf")

# keys of a `_target_` group that Hydra or runner.models.build consume, not the callable
# the `_target_` groups: open (any callable, any arguments it takes), checked against the callable
TARGET_GROUPS = {"optimizer": "adamw, adam, sgd, rmsprop",
                 "schedule": "constant, step, cosine, warmup_cosine, onecycle, linear",
                 "model": "linear, mlp, lenet, convnet, resnet18, resnet50, timm, torchvision",
                 "loss": "cross_entropy, distill"}
NOT_ARGUMENTS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_", "init_output_bias",
                 "layer_decay", "no_decay_norm_and_bias"}  # the last two: the optimizer's groups (training/optim.py)


@dataclass
class TrainConfig:
    """conf/train.yaml: one training run."""

    dataset: Any = MISSING
    """The data (conf/dataset/): each option names its typed schema (runner/data/settings.py);
    `custom` is open, its extra keys checked against the user's callable."""
    model: Any = MISSING
    """A `_target_` callable that returns an nn.Module, and its arguments (conf/model/)."""
    optimizer: Any = MISSING
    """A `_target_` torch optimizer with `_partial_: true` (conf/optimizer/)."""
    schedule: Any = MISSING
    """A `_target_` learning-rate factor of (epoch, total_epochs) with `_partial_: true` (conf/schedule/)."""
    evaluate: TrainingEvaluation = resumable(default_factory=TrainingEvaluation)
    """The evaluator after training (conf/evaluation/; runner/evaluation/settings.py)."""
    name: str = "default"
    """Names the run's folder under outputs/."""
    resume: str | None = resumable(None)
    """A checkpoint file to resume from; by default a rerun in the same run directory resumes from its newest."""
    require_clean_git: bool = False
    """Refuse to start when the git tree has uncommitted changes."""
    trainer: TrainerSettings = field(default_factory=TrainerSettings)
    """The loop (runner/training/settings.py)."""
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    """Staged fine-tuning: a frozen body first, discriminative learning rates (runner/training/settings.py)."""
    checkpoint: CheckpointSettings = resumable(default_factory=CheckpointSettings)
    """When checkpoints are written and how many are kept."""
    loss: Any = MISSING
    """A `_target_` callable (logits, targets) -> per-sample losses or their mean, `_partial_: true` (conf/loss/)."""
    """The cross-entropy's settings."""
    checks: ChecksSettings = resumable(default_factory=ChecksSettings)
    """python -m runner.check (runner/checks/settings.py)."""
    lr_find: LrFindSettings = resumable(default_factory=LrFindSettings)
    """python -m runner.lr_find."""
    sweep: SweepLink = resumable(default_factory=SweepLink)
    """A sweep trial's link to its study (filled in by the sweeper)."""
    logger: LoggerSettings = resumable(default_factory=LoggerSettings)
    """Trackers besides TensorBoard (conf/logger/: logger=[tensorboard,mlflow,wandb]; runner/tracking/settings.py)."""


def register_configs() -> None:
    """What Hydra must know before it composes: the `${run_id:}` resolver (run folder names, see
    run_folders.run_id), `${class_folders:ROOT}` (imagefolder's classes) and the schemas. Every entry point and the tests call this first."""
    from runner.common.run_folders import run_id

    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", run_id, use_cache=True)
    if not OmegaConf.has_resolver("class_folders"):
        OmegaConf.register_new_resolver("class_folders", class_folders)
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    store.store(name="evaluate_schema", node=EvaluateCommand)
    for name, schema in DATASET_SCHEMAS.items():
        store.store(name=f"dataset_{name}_schema", node=schema)  # not a group: --help lists groups as choices


def validate(cfg: DictConfig, import_targets: bool = True) -> None:
    """Raise UserError at the first bad setting of a training config; returns None when it is usable.

    import_targets=False leaves out the check of the `_target_` callables' arguments, which imports them (torch:
    seconds): `python -m runner` checks its command line so before its first log line, and the rest after it."""
    missing = missing_keys(cfg)
    if missing:
        raise UserError(f"{missing[0]} has no value (???). Fix: set it on the command line, e.g. {missing[0]}=...")
    refuse_unknown_keys(cfg)
    validate_training(cfg)
    validate_dataset(cfg.dataset)
    refuse_micro_batches_of_one(cfg.dataset, cfg.trainer.micro_batch_size)  # mixup/cutmix pair within one
    for group, choices in TARGET_GROUPS.items() if import_targets else ():
        validate_target(cfg[group], group, choices)
    if import_targets:  # model names, weights enums, weights files (imports timm/torchvision for their names)
        from runner.models.validation import validate_model

        validate_model(cfg.model)
        if cfg.loss.get("_target_") == "runner.training.distill.distillation":  # the teachers: there, trusted, fitting
            from runner.training.teachers import validate_distillation

            validate_distillation(cfg)
        from runner.training.losses import refuse_loss_without_soft_targets

        refuse_loss_without_soft_targets(cfg)  # mixup/cutmix: the loss must take class probabilities
    if cfg.dataset.name == "custom" and import_targets:
        validate_target(cfg.dataset, "dataset", "a module.function of yours that returns the splits",
                        ignore={f.name for f in fields(DatasetSettings)})
    if cfg.model.get("num_classes") != cfg.dataset.num_classes:
        fail("model.num_classes", cfg.model.get("num_classes"),
             f"does not match dataset.num_classes={cfg.dataset.num_classes}",
             "leave model.num_classes at its default ${dataset.num_classes}")
    validate_evaluation(cfg.evaluate, prefix="evaluate.")
    if cfg.evaluate.metric == "top5" and cfg.dataset.num_classes <= 5:
        fail("evaluate.metric", "top5", f"is 100% by construction with {cfg.dataset.num_classes} classes",
             "evaluate.metric=top1")
    validate_checks(cfg)
    validate_logger(cfg.logger)
    if cfg.require_clean_git:  # before any run directory: the run must come from committed code
        from runner.common import provenance

        provenance.require_committed_code(provenance.git_state(Path.cwd()), Path.cwd())
    if cfg.resume is not None and not Path(cfg.resume).is_file():
        fail("resume", cfg.resume, "is not a file", "resume=PATH/TO/checkpoints/epoch-NNNN.pt, or resume=null")


def validate_evaluate_command(settings: DictConfig) -> None:
    """conf/evaluate.yaml's settings, as `python -m runner.evaluate` composed them."""
    refuse_unknown_keys(settings)
    validate_evaluation(settings)


def missing_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Dotted keys left at ??? (without resolving interpolations that point at them)."""
    found = []
    for key in cfg:
        if OmegaConf.is_missing(cfg, key):
            found.append(f"{prefix}{key}")
        elif isinstance(cfg._get_node(key), DictConfig):
            found += missing_keys(cfg._get_node(key), f"{prefix}{key}.")
    return found


def refuse_unknown_keys(node: DictConfig, prefix: str = "") -> None:
    """A key its schema does not have (Hydra's `+key=value` adds one even to a typed block)."""
    schema = OmegaConf.get_type(node)
    known = {f.name for f in fields(schema)} if schema is not None and is_dataclass(schema) else None
    for key in node:
        child = node._get_node(key)
        if known is not None and key not in known:
            raise UserError(unknown_key_message(f"{prefix}{key}", node[key], [f"{prefix}{k}" for k in known]))
        if isinstance(child, DictConfig) and not OmegaConf.is_missing(node, key):
            refuse_unknown_keys(child, f"{prefix}{key}.")


def unknown_key_message(key: str, value, known: list[str]) -> str:
    """`key` is not among `known` (dotted keys beside it): name the closest one, or all of them."""
    parent, leaf = key.rsplit(".", 1) if "." in key else ("", key)
    leaves = sorted(k.rsplit(".", 1)[-1] for k in known)
    close = difflib.get_close_matches(leaf, leaves, n=1, cutoff=0.75)
    dotted = f"{parent}." if parent else ""
    if close:
        return f"{key} is not a setting (did you mean {dotted}{close[0]}?). Fix: {dotted}{close[0]}={value}"
    if parent and not leaves:  # a block that is null by default (trainer.progressive_resize) is given whole
        return f"{key} is not a setting while {parent} is null. Fix: {parent}={{{leaf}:{value}}}"
    return f"{key} is not a setting. Fix: drop it; the settings of {parent or 'the config'} are {', '.join(leaves)}"


def validate_target(group_cfg: DictConfig, group: str, choices: str, ignore: set[str] = frozenset()) -> None:
    """A `_target_` group: the callable imports, and takes every key given as an argument (but `ignore`)."""
    target = group_cfg.get("_target_")
    arguments = target_arguments(target, group, choices)
    if arguments is None:
        return  # takes **kwargs, or has no signature: instantiate will tell
    for key in group_cfg:
        if key not in NOT_ARGUMENTS and key not in ignore and key not in arguments:
            close = difflib.get_close_matches(key, [*arguments, *ignore], n=1)
            hint = f"{group}.{close[0]}={group_cfg[key]}" if close else f"~{group}.{key} (drop it); {target} takes {', '.join(arguments)}"
            raise UserError(f"{group}.{key}={group_cfg[key]!r} is not an argument of {target}. Fix: {hint}")


def target_arguments(target: str, group: str, choices: str) -> list[str] | None:
    """The keyword arguments `target` takes from its config; None when it takes any (**kwargs)."""
    try:
        function = _locate(target)  # what hydra.utils.get_method does, without its logged error
    except Exception:
        function = None
    if not callable(function):
        fail(f"{group}._target_", target, "cannot be imported" if function is None else "is not callable",
             f"pick one of the {group} configs ({choices}), or a module.function that imports here")
    arguments = keyword_arguments(function)
    return None if arguments is None else [
        name for name in arguments if name not in ("self", "params", "epoch", "total_epochs", "update_epochs")]
