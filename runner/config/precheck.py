"""Refuse a bad command line before Hydra creates a run directory: `python -m runner trainer.epoch=3`.

Hydra makes the run directory before it calls the task, and reports its own composition
errors in several lines with exit code 1. So each entry point composes the same config first
(Hydra's compose API, the same overrides), validates it, and on a problem prints one line
naming the key, the value and the fix, and exits with code 2 leaving nothing on disk:

    trainer.epoch is not a setting (did you mean trainer.epochs?). Fix: trainer.epochs=3
    trainer.compile='maybe' is not a valid bool. Fix: trainer.compile=false (its default), or another bool

Multirun (`-m`) is left to the sweeper, which composes and validates each trial itself.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from datetime import datetime

from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from runner.common.errors import UserError, one_line
from runner.config.schema import (
    CONF,
    TARGET_GROUPS,
    register_configs,
    target_arguments,
    unknown_key_message,
)


def refuse_bad_command_line(config_name: str, validate: Callable[[DictConfig], None], argv: list[str]) -> None:
    """Compose and validate as the Hydra app will; print one line and exit 2 on a problem."""
    overrides = plain_run_overrides(argv)
    if overrides is None:
        return
    register_configs()
    try:
        validate(compose_config(config_name, overrides))
    except UserError as error:
        refuse(one_line(error))
    except (ConfigCompositionException, MissingConfigException, OverrideParseException,
            OmegaConfBaseException) as error:
        refuse(translate(error, config_name, overrides))


def plain_run_overrides(argv: list[str]) -> list[str] | None:
    """The overrides of a plain run; None for --help, --cfg, --info, -m and other Hydra modes."""
    try:
        args = get_args_parser().parse_args(argv)
    except SystemExit:  # Hydra will say what is wrong with the flags
        return None
    modes = ("help", "hydra_help", "version", "cfg", "info", "shell_completion", "multirun", "experimental_rerun",
             "config_path", "config_name", "config_dir")
    return None if any(getattr(args, mode, None) for mode in modes) else list(args.overrides)


def compose_config(config_name: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def refuse(message: str) -> None:
    """The line as the run's log would have shown it (on stdout, like Hydra's console log), then exit 2.

    Under torchrun every process finds the same problem: rank 0 alone says it.
    """
    if os.environ.get("RANK", "0") == "0":
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        print(f"{stamp} ERROR runner: {message}", flush=True)
    sys.exit(2)


def translate(error: Exception, config_name: str, overrides: list[str]) -> str:
    """Hydra's and OmegaConf's composition errors as one line: key, value, fix."""
    cause = error.__cause__ or error
    text = str(error)
    type_problem = "not a valid" in str(cause) or "could not be converted" in str(cause)
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None) and type_problem:
        return wrong_type(cause, config_name, overrides)
    missing_option = re.search(r"Could not find '([\w/]+)'.*?Available options in '[\w/]+':\s*(.*?)(?:Config search|$)",
                               text, re.S)
    if missing_option:
        group, option = missing_option.group(1).rsplit("/", 1)
        options = ", ".join(missing_option.group(2).split())
        return f"{group}={option} is not an option: Could not find '{group}/{option}'. Fix: {group}=one of {options}"
    unknown = re.search(r"Could not override '([\w.]+)'", text)
    if unknown:
        return unknown_key(unknown.group(1), config_name, overrides)
    if isinstance(error, OverrideParseException):
        return (f"the command line cannot be parsed ({text.splitlines()[0]}). Fix: write each setting as "
                "key=value, and quote values with spaces, brackets or commas: 'key=[a,b]'")
    return f"{text.splitlines()[0]}. Fix: check the command line against `python -m runner --help`"


def wrong_type(cause: OmegaConfBaseException, config_name: str, overrides: list[str]) -> str:
    key = cause.full_key
    kind = re.search(r"(?:not a valid|could not be converted to) (\w+)", str(cause))
    kind = kind.group(1).lower() if kind else "value of this setting's type"
    given = next((o.split("=", 1)[1] for o in overrides if o.lstrip("+~").split("=", 1)[0] == key), cause.value)
    default = setting_default(key, config_name, [o for o in overrides if not o.lstrip("+~").startswith(f"{key}=")])
    return f"{key}={given!r} is not a valid {kind}. Fix: {key}={default} (its default), or another {kind}"


def unknown_key(key: str, config_name: str, overrides: list[str]) -> str:
    value = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == key), "...")
    parent = key.rsplit(".", 1)[0] if "." in key else None
    rest = [o for o in overrides if o.split("=", 1)[0] != key]
    try:
        node = compose_config(config_name, rest)
        node = OmegaConf.select(node, parent) if parent else node
        known = [f"{parent}.{k}" if parent else k for k in node]
    except Exception:
        node, known = None, []
    if parent in TARGET_GROUPS and isinstance(node, DictConfig) and isinstance(node.get("_target_"), str):
        try:
            arguments = target_arguments(node._target_, parent, TARGET_GROUPS[parent])
        except UserError:
            arguments = []
        leaf = key.rsplit(".", 1)[1]
        if arguments is None or leaf in arguments:  # an argument the callable takes, not in its yaml: add it
            return (f"{key} is not in the {parent} config ({node._target_} takes it). "
                    f"Fix: +{key}={value} (the + adds an argument)")
        known = sorted({*known, *(f"{parent}.{a}" for a in arguments)})
    return unknown_key_message(key, value, known)


def setting_default(key: str, config_name: str, overrides: list[str]) -> str:
    try:
        value = OmegaConf.select(compose_config(config_name, overrides), key)
    except Exception:
        return "..."
    if value is None:
        return "null"  # as the command line writes it: `key=None` is the string 'None', refused again
    return str(value).lower() if isinstance(value, bool) else str(value)
