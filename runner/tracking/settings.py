"""The `logger` block's schema and rules: `python -m runner logger=[tensorboard,mlflow] logger.mlflow.experiment=x`.

conf/logger/ is a group of which several options are chosen at once (`logger=[tensorboard,mlflow,wandb]`): each
option fills its own block, and a tracker is on when its block is there (not null). TensorBoard is always written:
its event files are what the trackers are fed from. Neither mlflow nor wandb is imported here (the schema imports
this module at every start, Tab completion included); an option whose package is not installed is refused in one
line naming the extra to install.
"""

from __future__ import annotations

import difflib
import importlib.util
from dataclasses import dataclass, field, fields
from typing import Any  # noqa: UP035 (OmegaConf reads these annotations at run time)

from omegaconf import DictConfig, OmegaConf

from runner.common.errors import UserError
from runner.common.rules import int_at_least, one_of, positive_number

TRACKERS = ("mlflow", "wandb")


@dataclass
class TensorboardSettings:
    """conf/logger/tensorboard.yaml: always on (the run's tb/ event files); no settings of its own."""


@dataclass
class MlflowSettings:
    """conf/logger/mlflow.yaml."""

    tracking_uri: str | None = None
    """Where runs go: http://HOST:PORT (an `mlflow server`), sqlite:///PATH.db, ...; null: the local store
    outputs/mlflow.db (artifacts in outputs/mlartifacts) under the directory the command runs in."""
    experiment: str | None = None
    """The MLflow experiment; null: a sweep trial's study (sweep.study), otherwise the run's `name`."""
    request_timeout: float = 10
    """Seconds a request may take; a server that does not answer in time is down for this sync."""
    retries: int = 1
    """Retries of a failed request before the sync gives up (the next checkpoint's sync tries again)."""


@dataclass
class WandbSettings:
    """conf/logger/wandb.yaml."""

    project: str = "runner"
    """The W&B project."""
    entity: str | None = None
    """The W&B team or user; null: your default entity."""
    mode: str = "offline"
    """offline (files in RUN/wandb/, sent later with `wandb sync RUN/wandb/offline-run-*`) | online."""
    group: str | None = None
    """The W&B group; null: a sweep trial's study (sweep.study), otherwise none."""


@dataclass
class LoggerSettings:
    """Where a run's curves go besides TensorBoard (conf/logger/): `logger=[tensorboard,mlflow,wandb]`."""

    tensorboard: TensorboardSettings = field(default_factory=TensorboardSettings)
    """Always written (tb/): the source the trackers are fed from."""
    mlflow: Any = None  # Any, not MlflowSettings | None: Hydra cannot set a key under a typed block that is null
    """Chosen with logger=[tensorboard,mlflow]: params, metrics, the evaluator's rows and figures to MLflow."""
    wandb: Any = None
    """Chosen with logger=[tensorboard,wandb]: the same to Weights & Biases (offline by default)."""


SCHEMAS = {"mlflow": MlflowSettings, "wandb": WandbSettings}
SCHEMA_DEFAULTS = {name: {f.name: f.default for f in fields(schema)} for name, schema in SCHEMAS.items()}


def trackers_of(logger: DictConfig) -> list[str]:
    """The trackers a run's `logger` block turns on, in a fixed order."""
    return [name for name in TRACKERS if logger.get(name) is not None]


def settings_of(logger: DictConfig, name: str) -> DictConfig:
    """logger.<name> on its schema: the defaults filled in (a block given whole: logger.mlflow={experiment:x}),
    an unknown key refused in one line."""
    refuse_unknown_keys(logger, name)
    return OmegaConf.merge(OmegaConf.structured(SCHEMAS[name]), dict(logger[name]))


def refuse_unknown_keys(logger: DictConfig, name: str) -> None:
    block = logger[name]
    known = [f.name for f in fields(SCHEMAS[name])]
    for key in block:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean logger.{name}.{close[0]}?" if close else f"its settings are {', '.join(known)}"
            raise UserError(f"logger.{name}.{key} is not a setting ({hint}). Fix: logger.{name}.{close[0] if close else known[0]}"
                            f"={block[key]}")


def validate(logger: DictConfig) -> None:
    """logger.*: each chosen tracker is installed and its settings are usable (one UserError at the first problem)."""
    for name in trackers_of(logger):
        if importlib.util.find_spec(name) is None:  # finds without importing
            raise UserError(f"logger=[tensorboard,{name}] needs the {name} package, which is not installed. "
                            f'Fix: pip install -e ".[{name}]" (or pip install {name}), or leave {name} out of logger')
    if logger.get("mlflow") is not None:
        refuse_unknown_keys(logger, "mlflow")
        mlflow = {**SCHEMA_DEFAULTS["mlflow"], **logger.mlflow}
        positive_number("logger.mlflow.request_timeout", mlflow["request_timeout"], "logger.mlflow.request_timeout=10")
        int_at_least("logger.mlflow.retries", mlflow["retries"], 0, "logger.mlflow.retries=1")
    if logger.get("wandb") is not None:
        refuse_unknown_keys(logger, "wandb")
        one_of("logger.wandb.mode", {**SCHEMA_DEFAULTS["wandb"], **logger.wandb}["mode"], ("offline", "online"))
