"""The rules every settings block's validator is written with, and their one-line message:

    trainer.epochs=0 must be an integer >= 1. Fix: trainer.epochs=10

Each block's schema and validator live beside the component that owns it (training/settings.py,
data/settings.py, evaluation/settings.py, checks/settings.py); runner/config/schema.py runs them all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from runner.common.errors import UserError

RESUMABLE = "resumable"


def resumable(default: Any = dataclasses.MISSING, **field_arguments) -> Any:
    """A schema field that may change between a run and its resume without changing what is computed
    (`trainer.epochs`, `dataset.root`, the whole `checks` block): a property of the field, read by
    `may_change_on_resume` when a checkpoint's config is compared with the command's."""
    return dataclasses.field(default=default, metadata={RESUMABLE: True}, **field_arguments)


def may_change_on_resume(cfg: DictConfig, key: str) -> bool:
    """Is the dotted `key`, or a block above it, a resumable field of the schemas `cfg` was composed from?"""
    node = cfg
    for part in key.split("."):
        schema = OmegaConf.get_type(node)
        if dataclasses.is_dataclass(schema):
            declared = {f.name: f.metadata for f in dataclasses.fields(schema)}
            if declared.get(part, {}).get(RESUMABLE):
                return True
        if not isinstance(node, DictConfig) or part not in node:
            return False
        node = node._get_node(part)
    return False


def fail(key: str, value, problem: str, fix: str):
    raise UserError(f"{key}={value!r} {problem}. Fix: {fix}")


def int_at_least(key: str, value, minimum: int, fix: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        fail(key, value, f"must be an integer >= {minimum}", fix)


def positive_number(key: str, value, fix: str, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        fail(key, value, "must be a number " + (">= 0" if allow_zero else "> 0"), fix)


def device_name(key: str, value) -> None:
    device = str(value)
    if not (device in ("auto", "cpu", "cuda", "mps") or (device.startswith("cuda:") and device[5:].isdigit())):
        fail(key, device, "is not a device", f"{key}=auto, cpu, cuda, cuda:N or mps")


def one_of(key: str, value, choices: Iterable[str]) -> None:
    choices = list(choices)
    if value not in choices:
        fail(key, value, "is not known", f"{key}={'|'.join(choices)} (one of them)")
