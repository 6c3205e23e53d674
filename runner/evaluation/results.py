"""python -m runner.evaluate run_dir=RUN   keeps its record of the run in RUN/eval/, through here:

    metrics.jsonl       one row per checkpoint, split and tta, every field; appended, one write a row
    metrics.csv         the same rows' scalars, rewritten whole after each row (never half a row)
    best.json           the best checkpoint by `metric`, its row, its most confused class pairs
    predictions/        each evaluated checkpoint's log-probabilities and labels
    test_ledger.jsonl   every look at the test split
    evaluate.log        the evaluator's log
    .lock               one evaluator at a time per run

and the one ranking of a run's checkpoints (`ranked`): it picks best.json, the checkpoint the
test split is looked at with, and the members of a top-K ensemble.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import torch

from runner import checkpoint_files
from runner.errors import UserError
from runner.evaluation.metric_names import METRICS, direction
from runner.io import (
    append_line,
    exclusive,
    read_jsonl,
    refuse_links,
    write_csv_atomic,
    write_json_atomic,
)
from runner.provenance import now

log = logging.getLogger("runner.evaluate")

CSV_COLUMNS = ["checkpoint", "epoch", "global_step", "split", "tta", "n", *METRICS, "top1_ci_low", "top1_ci_high"]


def eval_dir_of(run_dir: Path) -> Path:
    """The run's eval/ folder, made if missing; refused in one line when it is a symbolic link."""
    eval_dir = Path(run_dir) / "eval"
    refuse_links(eval_dir, root=run_dir)
    eval_dir.mkdir(parents=True, exist_ok=True)
    return eval_dir


def locked(eval_dir: Path):
    """One evaluator at a time per run (a watcher and the training run's own evaluation).

    First every file and folder of eval/ and eval/predictions/ is checked: a symbolic link there
    (planted, or copied along) is refused in one line before anything is evaluated or written.
    """
    refuse_links(eval_dir, root=eval_dir.parent)
    for folder in (eval_dir, eval_dir / "predictions"):
        refuse_links(folder, root=eval_dir.parent)
        for entry in folder.iterdir() if folder.is_dir() else ():
            if entry.is_symlink():
                refuse_links(entry, root=eval_dir.parent)
    return exclusive(eval_dir / ".lock")


@contextlib.contextmanager
def log_file(eval_dir: Path):
    """Also log into the run's eval/evaluate.log while evaluating (never through a symbolic link)."""
    refuse_links(eval_dir / "evaluate.log", root=eval_dir.parent)
    handler = logging.FileHandler(eval_dir / "evaluate.log")
    handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s",
                                           "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def read_rows(eval_dir: Path) -> list[dict]:
    """The rows of metrics.jsonl that name a checkpoint of this run; any other is left out with a warning."""
    path = Path(eval_dir) / "metrics.jsonl"
    run_dir = Path(eval_dir).parent
    rows = []
    for number, row in enumerate(read_jsonl(path), start=1):
        checkpoint = row.get("checkpoint") if isinstance(row, dict) else None
        if not inside_run(run_dir, checkpoint):
            warn_once(f"{path} row {number} names checkpoint {checkpoint!r}, outside the run {run_dir}: left out (a "
                      "run's ranking, best.json and test ledger hold only its own checkpoints). Fix: evaluate that "
                      "checkpoint in its own run folder")
            continue
        rows.append(row)
    return rows


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


WARNED: set[str] = set()


def warn_once(message: str) -> None:
    """A warning about a file, said once per process however often the file is read."""
    if message not in WARNED:
        WARNED.add(message)
        log.warning("%s", message)


def evaluated(eval_dir: Path) -> set[tuple[str, str, str]]:
    """(checkpoint, split, tta) of every row: what need not be evaluated again."""
    return {(row["checkpoint"], row["split"], row["tta"]) for row in read_rows(eval_dir)}


def find_row(eval_dir: Path, checkpoint_name: str, split: str, tta: str) -> dict | None:
    for row in read_rows(eval_dir):
        if (row["checkpoint"], row["split"], row["tta"]) == (checkpoint_name, split, tta):
            return row
    return None


def append_row(eval_dir: Path, row: dict) -> None:
    """One row to metrics.jsonl (every field), then metrics.csv (the scalars) rewritten from all rows."""
    append_line(eval_dir / "metrics.jsonl", json.dumps(row))
    table = [[r.get(column, "") for column in CSV_COLUMNS] for r in read_rows(eval_dir)]
    write_csv_atomic(eval_dir / "metrics.csv", CSV_COLUMNS, table)


def ranked(rows: list[dict], metric: str, direction_setting: str, tta: str, run_dir: Path) -> list[dict]:
    """The validation rows of `tta` whose checkpoint file still exists, best first by `metric`.

    A tie goes to the earlier checkpoint: it reached the same figure with less training. A row
    whose file retention (or a person) deleted is left out: nothing could be done with it.
    """
    best_is_max = direction(metric, direction_setting) == "max"
    candidates = [r for r in rows if r["split"] == "val" and r["tta"] == tta and inside_run(run_dir, r["checkpoint"])
                  and (run_dir / r["checkpoint"]).exists()]
    # sorted() is stable: rows equal in metric and epoch keep their order in metrics.jsonl
    return sorted(candidates, key=lambda r: (-r[metric] if best_is_max else r[metric], r["epoch"]))


def best_row(rows: list[dict], metric: str, direction_setting: str, tta: str, run_dir: Path) -> dict | None:
    """The best evaluated checkpoint's validation row (see `ranked`); None before any."""
    order = ranked(rows, metric, direction_setting, tta, run_dir)
    return order[0] if order else None


def predictions_path(eval_dir: Path, checkpoint_name: str, split: str, tta: str) -> Path:
    stem = Path(checkpoint_name).stem
    return eval_dir / "predictions" / f"{stem}.{split}{'' if tta == 'none' else '.' + tta}.pt"


def save_predictions(eval_dir: Path, row: dict, log_probabilities: torch.Tensor, labels: torch.Tensor) -> None:
    """The log-probabilities and labels behind a row, for ensembles and figures."""
    checkpoint_files.save_atomic({"log_probabilities": log_probabilities, "labels": labels},
                                 predictions_path(eval_dir, row["checkpoint"], row["split"], row["tta"]))


def load_predictions(eval_dir: Path, checkpoint_name: str, split: str, tta: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probabilities, labels) of an evaluated checkpoint."""
    saved = torch.load(predictions_path(eval_dir, checkpoint_name, split, tta), weights_only=True)
    return saved["log_probabilities"], saved["labels"]


def read_best(eval_dir: Path) -> dict:
    """The best.json written last time; {} before the first."""
    path = eval_dir / "best.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_best(eval_dir: Path, best: dict, metric: str, direction_setting: str, pairs: list | None) -> None:
    """best.json: the best row, the metric and direction that chose it, the most confused pairs if known."""
    record = {"checkpoint": best["checkpoint"], "epoch": best["epoch"], "global_step": best["global_step"],
              "metric": metric, "direction": direction(metric, direction_setting), "value": best[metric],
              "split": best["split"], "tta": best["tta"], "metrics": best}
    if pairs is not None:
        record["confused_pairs"] = pairs
    write_json_atomic(eval_dir / "best.json", record)


def record_test_look(eval_dir: Path, checkpoint_name: str, tta: str, top1: float) -> None:
    """Append this look at the test split to the run's ledger; warn if it is not the first."""
    if not inside_run(Path(eval_dir).parent, checkpoint_name):
        raise UserError(f"{checkpoint_name} lies outside the run {Path(eval_dir).parent}: the run's test ledger "
                        "records only its own checkpoints. Fix: look at the test split in that checkpoint's own run")
    ledger = eval_dir / "test_ledger.jsonl"
    looks = read_jsonl(ledger)
    if looks:
        log.warning("the test split of this run has been looked at %d time(s) before (first %s, %s): results chosen "
                    "after looking are no longer an unbiased estimate. Tune on val; test once.",
                    len(looks), looks[0]["time"], looks[0]["checkpoint"])
    append_line(ledger, json.dumps({"time": now(), "checkpoint": checkpoint_name, "tta": tta, "top1": top1}))
