"""Every run below a folder in one table: `python -m runner.runs [outputs] [sort=top1] [where=model=convnet]`.

A run is a folder with a run.json. Each row reads only that run's run.json, .hydra/ and
eval/best.json (never a checkpoint), so the table is quick on hundreds of runs and works on a
copied or remote-mounted outputs folder. A best row of averaged weights says so after its
checkpoint: "checkpoints/epoch-0009.pt (ema)".
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
import socket
import time
from pathlib import Path

import yaml

from runner.common.errors import UserError
from runner.evaluation import records
from runner.evaluation.records import inside_run
from runner.evaluation.run_differences import flat
from runner.evaluation.terminal_table import fitted

log = logging.getLogger("runner.runs")

COLUMNS = ["start", "name", "run", "status", "git", "overrides", "epochs", "metric", "best", "ci95", "checkpoint",
           "other"]
LOADER = records.LOADER
PLUMBING = ("sweep.", "hydra.", "hydra/")  # the sweeper's and Hydra's own settings: never in the overrides column
STARTING_SECONDS = 60  # a train.log younger than this with no ERROR line, and no run.json: a run starting up
EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception|Interrupt|Exit)\b.*:")  # "PIL.UnidentifiedImageError: ..."


def read_json(path: Path) -> dict:
    """A JSON object, or {} when the file is missing or is not one (callers that must know use records)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def read_yaml(path: Path):
    """A YAML mapping, or {} when the file is missing or is not one."""
    try:
        record = yaml.load(path.read_text(), Loader=LOADER) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return record if isinstance(record, dict) else {}


def status_word(status: str) -> str:
    """run.json's status ("failed: ValueError: ...") as one word: finished, running, failed, preempted, pruned."""
    return (status or "unknown").split(":", 1)[0]


def git_cell(git: dict | None) -> str:
    if not git:
        return "-"
    return f"{str(git.get('commit', ''))[:8]}{'+dirty' if git.get('dirty') else ''}"


def run_row(run_dir: Path, root: Path) -> dict:
    """One run's row, with its config's choices kept aside for `where=`; a file of the wrong shape is a UserError."""
    fix = "repair or remove that file; the table skips this run meanwhile"
    record = records.read_json_object(run_dir / "run.json", records.RUN_RECORD, fix)
    record = unrecorded_start(run_dir) if record is None else record
    config = records.read_yaml_mapping(run_dir / ".hydra" / "config.yaml", records.HYDRA_CONFIG, fix) or {}
    settings = records.read_yaml_mapping(run_dir / ".hydra" / "hydra.yaml", records.HYDRA_SETTINGS, fix) or {}
    choices = ((settings.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
    best = records.read_json_object(run_dir / "eval" / "best.json", records.BEST, fix) or {}
    if best and not inside_run(run_dir, best["checkpoint"]):
        raise UserError(f"{run_dir / 'eval' / 'best.json'} names checkpoint {best['checkpoint']!r}, outside the run. "
                        f"Fix: {fix}")
    interval = (best.get("metrics") or {}).get("top1_ci95") if best.get("metric") == "top1" else None
    # best.json holds the run's own result; one an older evaluator chose among other settings' rows says so
    variant = best.get("variant") if "variant" in best else ("" if best.get("tta", "none") == "none"
                                                             else f"tta={best['tta']}")
    total = (config.get("trainer") or {}).get("epochs", "?")
    return {
        "start": str(record.get("start_time", ""))[:19].replace("T", " "),
        "name": config.get("name", run_dir.parent.name),
        "run": str(run_dir.relative_to(root)),
        "status": status_word(record.get("status", "")),
        "git": git_cell(record.get("git")),
        "overrides": " ".join(shown_overrides(record.get("overrides") or [])),
        "epochs": f"{record.get('epochs_done', '-')}/{total}",
        "metric": f"{best['metric']} ({variant})" if best and variant else best.get("metric", "-"),
        "best": best.get("value"),
        "ci95": f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval and len(interval) == 2 else "-",
        "checkpoint": checkpoint_cell(best),
        "other": other_settings(run_dir) if status_word(record.get("status", "")) != "failed" else failure(record),
        "_where": {**{f"{group}": option for group, option in choices.items()},
                   **dict(o.split("=", 1) for o in (record.get("overrides") or []) if "=" in o)},
        # what runner.runs group_by= reads: the settings, the metric's own name, the overrides one by one
        "_config": flat(config), "_metric": best.get("metric"), "_overrides": list(record.get("overrides") or []),
        "_shown": shown_overrides(record.get("overrides") or []),
    }


def shown_overrides(overrides: list[str]) -> list[str]:
    """The overrides a person chose: the sweeper's bookkeeping (sweep.study=, sweep.storage=, sweep.trial=) and
    Hydra's own settings (hydra.*, hydra/launcher=) left out."""
    return [o for o in overrides if not o.lstrip("+~").startswith(PLUMBING)]


def failure(record: dict) -> str:
    """Why a failed run failed: run.json's "failed: ValueError: ..." or the last error line of its train.log."""
    return record.get("error") or str(record.get("status", "")).partition(":")[2].strip() or "-"


def unrecorded_start(run_dir: Path) -> dict:
    """A run folder without run.json (it failed before writing one: data missing, a bad image at start; or it is
    starting now): its record as far as .hydra/ and train.log tell."""
    try:
        lines = (run_dir / "train.log").read_text(errors="replace").splitlines()
        age = time.time() - (run_dir / "train.log").stat().st_mtime
    except OSError:
        lines, age = [], math.inf
    overrides = read_yaml_list(run_dir / ".hydra" / "overrides.yaml")
    errors = [line for line in lines if EXCEPTION_LINE.match(line) or " ERROR " in line or " CRITICAL " in line]
    # a trainer starting up has its train.log but not yet its pid in the lock: a young log without an error
    starting = holder_alive(run_dir) or (age < STARTING_SECONDS and not errors)
    return {"status": "starting" if starting else "failed", "overrides": overrides,
            "start_time": lines[0][:19] if lines and lines[0][:4].isdigit() else "",
            "error": next((line for line in reversed(errors) if EXCEPTION_LINE.match(line)),
                          errors[-1] if errors else (lines[-1] if lines else "")).strip()}


def read_yaml_list(path: Path) -> list[str]:
    try:
        listed = yaml.load(path.read_text(), Loader=LOADER)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    return [str(item) for item in listed] if isinstance(listed, list) else []


def holder_alive(run_dir: Path) -> bool:
    """Whether the trainer named in the run's lock file lives on this machine (a trainer that let go empties
    the file; one that was killed leaves its name behind, and its process is gone)."""
    holder = read_json(run_dir / ".run.lock")
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def checkpoint_cell(best: dict) -> str:
    """The best checkpoint, and its weights where they are averaged ones (an older best.json: the raw ones)."""
    if not best:
        return "-"
    weights = best.get("weights")
    return best["checkpoint"] + (f" ({weights})" if isinstance(weights, str) and weights != "raw" else "")


def other_settings(run_dir: Path) -> str:
    """The bests of exploratory evaluations (eval/best.VARIANT.json: tta, another batch size or precision), labelled:
    "tta=flip: top1 0.9387 (epoch 10)", with the weights where averaged ("(epoch 10, ema)"); "-" when none. A
    malformed one is left out with a warning."""
    shown = []
    for path in sorted((run_dir / "eval").glob("best.*.json")):
        try:
            best = records.read_json_object(path, records.BEST, "delete it, or evaluate again with those settings")
        except UserError as error:
            log.warning("%s: left out", error)
            continue
        if best and best.get("variant") and inside_run(run_dir, best["checkpoint"]):
            weights = best.get("weights") if isinstance(best.get("weights"), str) else "raw"  # older: raw
            said = [*([f"epoch {best['epoch']}"] if "epoch" in best else []), *([weights] if weights != "raw" else [])]
            epoch = f" ({', '.join(said)})" if said else ""
            shown.append(f"{best['variant']}: {best['metric']} {best['value']:.4f}{epoch}")
    return "; ".join(shown) or "-"


def find_runs(root: Path) -> list[Path]:
    """Every folder with a run.json below root (sweep trials included), and every training folder that failed
    before writing one (.hydra/ and train.log), oldest first by path."""
    if not root.is_dir():
        raise UserError(f"{root} is not a folder. Fix: python -m runner.runs outputs (where `python -m runner` writes)")
    recorded = {path.parent for path in root.rglob("run.json")}
    unrecorded = {path.parent for path in root.rglob("train.log") if (path.parent / ".hydra").is_dir()}
    return sorted(recorded | unrecorded)


def table(root: Path, sort: str | None = None, where: list[str] = ()) -> list[dict]:
    rows = []
    for run_dir in find_runs(root):
        try:
            rows.append(run_row(run_dir, root))
        except UserError as error:
            log.warning("skipped %s: %s", run_dir, error)
    for condition in where:
        if "=" not in condition:
            raise UserError(f"where={condition!r} is not KEY=VALUE. Fix: where=model=convnet")
        key, value = condition.split("=", 1)
        rows = [r for r in rows if str(r["_where"].get(key, r.get(key))) == value]
    return sorted_rows(rows, sort, COLUMNS, "best")


def sorted_rows(rows: list[dict], sort: str | None, columns: list[str], value_column: str) -> list[dict]:
    """Rows by sort=COLUMN (highest first; sort=-COLUMN lowest first), rows without a value last; a metric's
    name (sort=top1) sorts by the value column."""
    if not sort:
        return rows
    descending = not sort.startswith("-")
    key = sort.lstrip("-")
    if key not in columns and key not in ("top1", "loss", "top5", "balanced_accuracy", "ece", "best"):
        raise UserError(f"sort={sort!r} is not a column. Fix: sort={value_column} (or one of {', '.join(columns)})")
    key = value_column if key not in columns else key
    present = [r for r in rows if r[key] is not None]
    return sorted(present, key=lambda r: r[key], reverse=descending) + [r for r in rows if r[key] is None]


def formatted(rows: list[dict], style: str, columns: list[str] = COLUMNS) -> str:
    cells = [[f"{r[c]:.4f}" if c in ("best", "mean", "std") and isinstance(r[c], float)
              else str(r[c] if r.get(c) is not None else "-") for c in columns] for r in rows]
    if style == "csv":
        out = io.StringIO()
        csv.writer(out).writerows([columns, *cells])
        return out.getvalue()
    if style == "markdown":
        return "\n".join(["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns),
                          *("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells)]) + "\n"
    return fitted(columns, rows, cells)
