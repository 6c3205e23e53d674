"""The shapes of the files a run folder holds, as the commands that read them expect them.

`python -m runner.runs`, `runner.compare` and `runner.evaluate` read files that a person, a
copy or another program may have changed: run.json, .hydra/*.yaml, eval/best.json, the rows of
eval/metrics.jsonl and eval/test_ledger.jsonl. Each is checked against the schema below before
it is used, so a file of the wrong shape is one line naming the file, the field and the fix (or
a warning where the command can go on without it), never an AttributeError three calls later.
The fault suite generates its malformed files from these schemas (tests/faults/test_malformed_files.py).

A schema maps a field (dotted for a nested one) to (the kinds it may be, whether it is required).
Kinds: str, int, number, bool, dict, list, list[str], null.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from runner.common.errors import UserError

Schema = dict[str, tuple[tuple[str, ...], bool]]

# run.json (runner/common/provenance.py): what the runs table, compare and the watcher read of it
RUN_RECORD: Schema = {
    "status": (("str",), False),
    "start_time": (("str", "null"), False),
    "overrides": (("list[str]", "null"), False),
    "epochs_done": (("int", "null"), False),
    "seed": (("int", "null"), False),
    "git": (("dict", "null"), False),
    "git.commit": (("str", "null"), False),
    "git.dirty": (("bool", "null"), False),
    "environment": (("dict", "null"), False),
    "environment.torch": (("str", "null"), False),
    "environment.device": (("str", "null"), False),
    "environment.device_name": (("str", "null"), False),
}

# eval/best.json (results.write_best)
BEST: Schema = {
    "checkpoint": (("str",), True),
    "metric": (("str",), True),
    "value": (("number",), True),
    "epoch": (("int",), False),
    "global_step": (("int",), False),
    "direction": (("str",), False),
    "split": (("str",), False),
    "tta": (("str",), False),
    "variant": (("str",), False),
    "weights": (("str",), False),
    "metrics": (("dict",), False),
    "metrics.n": (("int",), False),
    "metrics.top1_ci95": (("list[number]",), False),
    "confused_pairs": (("list",), False),
}

# a row of eval/metrics.jsonl (evaluate.evaluate_checkpoint)
ROW: Schema = {
    "checkpoint": (("str",), True),
    "epoch": (("int",), True),
    "split": (("str",), True),
    "tta": (("str",), True),
    "global_step": (("int",), False),
    "n": (("int",), False),
    "loss": (("number", "null"), False),
    "top1": (("number", "null"), False),
    "top5": (("number", "null"), False),
    "balanced_accuracy": (("number", "null"), False),
    "ece": (("number", "null"), False),
    "top1_ci95": (("list[number]",), False),
    "top1_ci_low": (("number",), False),
    "top1_ci_high": (("number",), False),
    "per_class_accuracy": (("list",), False),
    "precision": (("str",), False),
    "batch_size": (("int", "null"), False),
    "variant": (("str",), False),
    "weights": (("str",), False),  # raw | ema | swa (averaged_weights.py); absent in an older row: raw
    "weights_held": (("list[str]",), False),  # every weights its checkpoint holds
}

# a line of eval/test_ledger.jsonl (results.record_test_look)
LOOK: Schema = {
    "time": (("str",), True),
    "checkpoint": (("str",), True),
    "tta": (("str",), False),
    "top1": (("number", "null"), False),
    "variant": (("str",), False),
    "weights": (("str",), False),
}

# .hydra/config.yaml and .hydra/hydra.yaml: what the runs table and compare read of them
HYDRA_CONFIG: Schema = {
    "name": (("str", "int", "number", "null"), False),
    "trainer": (("dict", "null"), False),
    "trainer.epochs": (("int", "str", "null"), False),
}
HYDRA_SETTINGS: Schema = {
    "hydra": (("dict", "null"), False),
    "hydra.runtime": (("dict", "null"), False),
    "hydra.runtime.choices": (("dict", "null"), False),
}


def inside_run(run_dir: Path, name) -> bool:
    """Whether `name`, a checkpoint as a run's records store it, is a file inside run_dir: a relative path
    without `..` that does not lead out through a symbolic link either."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        return False
    try:
        (Path(run_dir) / name).resolve().relative_to(Path(run_dir).resolve())
    except (ValueError, OSError, RuntimeError):
        return False
    return True


def kind_of(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "number"
    return {str: "str", list: "list", dict: "dict"}.get(type(value), type(value).__name__)


def is_kind(value, kind: str) -> bool:
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "list[str]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "list[number]":
        return isinstance(value, list) and all(is_kind(v, "number") for v in value)
    return kind_of(value) == kind


def is_finite_number(value) -> bool:
    """A number a ranking can compare: not a bool, not NaN, not infinite."""
    return is_kind(value, "number") and math.isfinite(value)


def lookup(record: dict, field: str) -> tuple[bool, object]:
    """(present, value) of a dotted field; a field under a parent that is not a dict is absent."""
    node = record
    for part in field.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def problem(record, schema: Schema, what: str = "JSON object") -> str | None:
    """What is wrong with `record` by `schema`, in words; None when nothing is."""
    if not isinstance(record, dict):
        return f"is a {kind_of(record)}, not a {what}"
    for field, (kinds, required) in schema.items():
        present, value = lookup(record, field)
        if not present:
            if required:
                return f"lacks {field}"
            continue
        if not any(is_kind(value, kind) for kind in kinds):
            return f"has {field}={short(value)} (a {kind_of(value)}; {' or '.join(kinds)} expected)"
        if isinstance(value, float) and not math.isfinite(value) and field in ("value", "epoch"):
            return f"has {field}={value}"
    return None


def short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def read_json_object(path: Path, schema: Schema, fix: str) -> dict | None:
    """A JSON file that must hold an object of `schema`; None when it does not exist, a UserError naming the
    file and its problem (with `fix`) when it is not JSON or not of that shape."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path} cannot be read ({type(error).__name__}: {error}). Fix: {fix}") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not JSON ({error}). Fix: {fix}") from None
    said = problem(record, schema)
    if said is not None:
        raise UserError(f"{path} {said}. Fix: {fix}")
    return record


LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser where installed: 10x faster


def read_yaml_mapping(path: Path, schema: Schema, fix: str) -> dict | None:
    """A YAML file that must hold a mapping of `schema` (empty: {}); None when it does not exist."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path} cannot be read ({type(error).__name__}: {error}). Fix: {fix}") from None
    try:
        record = yaml.load(text, Loader=LOADER)
    except yaml.YAMLError as error:
        first = str(error).replace("\n", " ")
        raise UserError(f"{path} is not YAML ({first[:120]}). Fix: {fix}") from None
    said = problem({} if record is None else record, schema, what="YAML mapping")
    if said is not None:
        raise UserError(f"{path} {said}. Fix: {fix}")
    return record or {}
