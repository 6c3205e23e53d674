"""What a sweep optimizes: `hydra.sweeper.objectives=[top1,parameters]`; several make a Pareto front.

    top1, top5, loss, balanced_accuracy, ece   the evaluator's best checkpoint (eval/best.json; the best
                                               by evaluate.metric among all its rows, raw, ema and swa
                                               weights, so every value is of one checkpoint's weights)
    parameters                                 the model's parameter count (run.json)
    train_seconds                              wall-clock seconds of training, all attempts (run.json)

A name may end in :max or :min; otherwise metrics go the evaluator's way and the last two are
minimized. No objectives: evaluate.metric alone, in hydra.sweeper.direction.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from runner.common.errors import UserError, one_line
from runner.evaluation import records
from runner.evaluation.metric_names import METRICS, direction
from runner.evaluation.results import read_best

log = logging.getLogger("runner.sweep")

RUN_FACTS = ("parameters", "train_seconds")
MEASURED = (*sorted(METRICS, key=lambda name: name != "top1"), *RUN_FACTS)  # evaluate.metric's default first
RUN_JSON: records.Schema = {**records.RUN_RECORD, "parameters": (("int", "null"), False),
                            "end_time": (("str", "null"), False), "attempts": (("list",), False)}
FIX = "the sweeper takes no value from this folder: run the trial again (or remove the file)"


def parse(objectives: list[str], metric: str, metric_direction: str, direction: str) -> tuple[list[str], list[str]]:
    """(names, Optuna directions) of the sweep's objectives."""
    if not objectives:
        return [metric], [study_direction(direction, metric, metric_direction)]
    names, directions = [], []
    for entry in objectives:
        name, _, way = str(entry).partition(":")
        if name not in MEASURED:
            raise UserError(f"hydra.sweeper.objectives has {name!r}, which is not measured. "
                            f"Fix: one of {', '.join(MEASURED)} (each may end in :max or :min)")
        if way not in ("", "max", "min"):
            raise UserError(f"hydra.sweeper.objectives has {entry!r}. Fix: {name}:max or {name}:min, or {name}")
        if not way:
            way = "min" if name in RUN_FACTS else study_direction("auto", name)[:3]
        names.append(name)
        directions.append({"max": "maximize", "min": "minimize"}[way])
    if len(set(names)) < len(names):
        raise UserError(f"hydra.sweeper.objectives={list(objectives)} names one twice. Fix: each objective once")
    return names, directions


def study_direction(setting: str, metric: str, metric_direction: str = "auto") -> str:
    """maximize | minimize: the sweeper's own direction, else the evaluator's rule for its metric.

    The objective is the evaluator's best validation metric, so it is optimized the way the
    evaluator picks its best checkpoint (runner/evaluation/metric_names.py: `direction`).
    """
    if setting != "auto":
        return setting
    return {"max": "maximize", "min": "minimize"}[direction(metric, metric_direction)]


def values_of(run_dir: Path, names: list[str]) -> list[float] | None:
    """The objectives of a finished trial's run, from its folder; None when it did not finish or one is missing.
    A run.json or best.json of another shape (a list, a string, a field of the wrong kind) is None and one
    warning naming the file, never a crash of the worker that reads it."""
    try:
        record = records.read_json_object(run_dir / "run.json", RUN_JSON, FIX)
        best = read_best(run_dir / "eval")
    except UserError as error:
        log.warning("%s", one_line(error))
        return None
    if record is None or record.get("status") != "finished":
        return None
    facts = {**best.get("metrics", {}), "parameters": record.get("parameters"), "train_seconds": seconds(record)}
    values = [facts.get(name) for name in names]
    if all(records.is_finite_number(v) for v in values):
        return [float(v) for v in values]
    return None


def seconds(record: dict) -> float | None:
    """Wall-clock seconds of a run's attempts, each from its start to its end (a killed one has no end
    on record: its time is not counted; nor is an attempt whose times are not ISO dates)."""
    total, counted = 0.0, False
    for attempt in [record, *record.get("attempts", [])]:
        if not isinstance(attempt, dict) or not attempt.get("start_time") or not attempt.get("end_time"):
            continue
        try:
            total += (datetime.fromisoformat(attempt["end_time"]) - datetime.fromisoformat(attempt["start_time"])
                      ).total_seconds()
        except (TypeError, ValueError):
            continue
        counted = True
    return total if counted else None
