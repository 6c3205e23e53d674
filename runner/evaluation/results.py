"""python -m runner.evaluate run_dir=RUN   keeps its record of the run in RUN/eval/, through here:

    metrics.jsonl       one row per checkpoint, weights (raw, ema, swa: averaged_weights.py), split and
                        settings (tta, precision, batch size), every field; appended, one write a row
    metrics.csv         the same rows' scalars, rewritten whole after each row (never half a row)
    best.json           the run's best checkpoint by `metric` and the weights it was best with, its row, its
                        most confused class pairs: chosen among all the rows (raw, ema, swa) of the run's
                        own evaluation settings only
    best.VARIANT.json   the best under other settings (best.tta-flip.json, best.batch_size-256.json):
                        an exploratory evaluation, labelled, beside the run's result, never over it
    predictions/        each evaluated checkpoint's log-probabilities and labels
    test_ledger.jsonl   every look at the test split
    evaluate.log        the evaluator's log
    .lock               one evaluator at a time per run

and the one ranking of a run's checkpoints (`ranked`): it picks best.json, the checkpoint the
test split is looked at with, and the members of a top-K ensemble.

Each row says how it differs from the run's own evaluation settings (those in the checkpoint's
saved config, `evaluate.*`): its `variant`, "" for the run's own, else e.g. "tta=flip" or
"precision=bf16, batch_size=256".
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from runner.common.errors import UserError
from runner.common.io import (
    append_line,
    exclusive,
    refuse_links,
    write_csv_atomic,
    write_json_atomic,
)
from runner.common.provenance import now
from runner.evaluation import records
from runner.evaluation.metric_names import METRICS, direction
from runner.evaluation.records import inside_run
from runner.evaluation.variants import other_than_tta, row_settings, variant_of, variant_slug
from runner.evaluation.weight_names import WEIGHTS, weights_of

log = logging.getLogger("runner.evaluate")

CSV_COLUMNS = ["checkpoint", "epoch", "global_step", "weights", "split", "tta", "n", *METRICS, "top1_ci_low",
               "top1_ci_high"]


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
    """The rows of metrics.jsonl, the last one of each checkpoint, weights, split and settings where there are
    several; a row without `weights` (an older evaluator's) is of the raw weights, and gets the field here.

    A row that is not whole (a writer killed mid-line), not of the row's shape (records.ROW) or that
    names a checkpoint outside the run is left out with a warning: its checkpoint counts as not
    evaluated, so the evaluator measures it again.
    """
    path = Path(eval_dir) / "metrics.jsonl"
    run_dir = Path(eval_dir).parent
    rows: dict[tuple, dict] = {}
    for number, row in read_records(path, records.ROW, "its checkpoint is evaluated again"):
        if not inside_run(run_dir, row["checkpoint"]):
            warn_once(f"{path} line {number} names checkpoint {row['checkpoint']!r}, outside the run {run_dir}: left "
                      "out (a run's ranking, best.json and test ledger hold only its own checkpoints). Fix: evaluate "
                      "that checkpoint in its own run folder")
            continue
        if weights_of(row) not in WEIGHTS:
            warn_once(f"{path} line {number} has weights={row['weights']!r}, not one of {', '.join(WEIGHTS)}: skipped")
            continue
        row["weights"] = weights_of(row)
        rows.pop(row_key(row), None)
        rows[row_key(row)] = row  # a checkpoint evaluated again (its predictions were lost): the newer row
    return list(rows.values())


def row_key(row: dict) -> tuple:
    """What makes two rows the same evaluation: the checkpoint, the split, the settings and the weights."""
    return row["checkpoint"], row["split"], *row_settings(row), weights_of(row)


def read_records(path: Path, schema: records.Schema, consequence: str) -> list[tuple[int, dict]]:
    """(line number, record) of each line of a JSON-lines file that is a record of `schema`; each other
    line (torn by a kill, or of another shape) is left out with a warning naming the file and line."""
    path = Path(path)
    try:
        lines = path.read_bytes().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    found = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            warn_once(f"{path} line {number} is not a whole record (a writer stopped mid-line?): skipped; "
                      f"{consequence}")
            continue
        said = records.problem(record, schema)
        if said is not None:
            warn_once(f"{path} line {number} {said}: skipped; {consequence}")
            continue
        found.append((number, record))
    return found


WARNED: set[str] = set()


def warn_once(message: str) -> None:
    """A warning about a file, said once per process however often the file is read."""
    if message not in WARNED:
        WARNED.add(message)
        log.warning("%s", message)


def evaluated(eval_dir: Path) -> set[tuple[str, str, str]]:
    """The row_key of every row whose predictions are saved: what need not be evaluated again.

    A row whose predictions file is missing (a run copied without eval/predictions/) is evaluated
    again, with a warning: ensembles, compare and the figures need that file.
    """
    # here, not at the top: the sweeper plugin, which Hydra imports at every start (also for --help and Tab
    # completion), reads results through sweep.objectives, and predictions imports torch (seconds)
    from runner.evaluation.predictions import predictions_of

    done = set()
    for row in read_rows(eval_dir):
        saved = predictions_of(eval_dir, row)
        if saved.is_file():
            done.add(row_key(row))
        else:
            warn_once(f"{saved} is missing (a run copied without eval/predictions/?): {row['checkpoint']} is "
                      f"evaluated again on {row['split']}")
    return done


def weights_held(rows: list[dict]) -> dict[str, tuple[str, ...]]:
    """checkpoint -> the weights it holds, as its rows recorded them (an older row: the raw weights only)."""
    return {row["checkpoint"]: tuple(row.get("weights_held") or ("raw",)) for row in rows}


def find_row(eval_dir: Path, checkpoint_name: str, split: str, key: tuple | str, weights: str = "raw") -> dict | None:
    """The row of a checkpoint's `weights` on a split, evaluated with the settings_key `key` (or, given a tta alone,
    the run's own row of that tta)."""
    for row in read_rows(eval_dir):
        if (row["checkpoint"], row["split"], row["weights"]) != (checkpoint_name, split, weights):
            continue
        if row_settings(row) == key if isinstance(key, tuple) else (row["tta"] == key and not other_than_tta(row)):
            return row
    return None


def append_row(eval_dir: Path, row: dict) -> None:
    """One row to metrics.jsonl (every field), then metrics.csv (the scalars) rewritten from all rows."""
    append_line(eval_dir / "metrics.jsonl", json.dumps(row))
    table = [[r.get(column, "") for column in CSV_COLUMNS] for r in read_rows(eval_dir)]
    write_csv_atomic(eval_dir / "metrics.csv", CSV_COLUMNS, table)


def ranked(rows: list[dict], metric: str, direction_setting: str, tta: str | None, run_dir: Path, *,
           key: tuple | None = None, variant: str | None = None) -> list[dict]:
    """The validation rows of one evaluation setting whose checkpoint file still exists, best first by `metric`;
    each checkpoint once, by the row of its best weights (raw, ema or swa).

    Which setting: `key` (a settings_key: the rows of those settings), or `variant` ("": the run's
    own), or by default the rows of `tta` in the run's own precision and batch size. A tie goes to
    the earlier checkpoint: it reached the same figure with less training (within a checkpoint, to raw, then
    ema, then swa: the simpler weights). A row whose file
    retention (or a person) deleted is left out: nothing could be done with it.
    """
    def chosen(r: dict) -> bool:
        if key is not None:
            return row_settings(r) == key
        if variant is not None:
            return variant_of(r) == variant
        return r["tta"] == tta and not other_than_tta(r)

    best_is_max = direction(metric, direction_setting) == "max"
    candidates = [r for r in rows if r["split"] == "val" and chosen(r) and inside_run(run_dir, r["checkpoint"])
                  and records.is_finite_number(r.get(metric)) and (run_dir / r["checkpoint"]).exists()]
    # sorted() is stable: rows equal in metric, epoch and weights keep their order in metrics.jsonl
    order = sorted(candidates, key=lambda r: (-r[metric] if best_is_max else r[metric], r["epoch"],
                                              WEIGHTS.index(weights_of(r))))
    seen: set[str] = set()
    return [r for r in order if r["checkpoint"] not in seen and not seen.add(r["checkpoint"])]


def best_row(rows: list[dict], metric: str, direction_setting: str, tta: str | None, run_dir: Path, *,
             key: tuple | None = None, variant: str | None = None) -> dict | None:
    """The best evaluated checkpoint's validation row (see `ranked`); None before any."""
    order = ranked(rows, metric, direction_setting, tta, run_dir, key=key, variant=variant)
    return order[0] if order else None


def best_path(eval_dir: Path, variant: str = "") -> Path:
    """best.json for the run's own settings; best.VARIANT.json for others."""
    return Path(eval_dir) / ("best.json" if not variant else f"best.{variant_slug(variant)}.json")


def read_best(eval_dir: Path, variant: str = "") -> dict:
    """The best.json (or best.VARIANT.json) written last time; {} before the first. One of another shape, or
    naming a checkpoint outside the run, is a one-line UserError."""
    path = best_path(eval_dir, variant)
    run_dir = Path(eval_dir).parent
    fix = f"python -m runner.evaluate run_dir={run_dir} writes it again from the run's rows"
    best = records.read_json_object(path, records.BEST, fix)
    if best is None:
        return {}
    if not inside_run(run_dir, best["checkpoint"]):
        raise UserError(f"{path} names checkpoint {best['checkpoint']!r}, outside the run {run_dir}: a run's best is one "
                        f"of its own checkpoints. Fix: {fix}")
    if best["metric"] not in METRICS:
        raise UserError(f"{path} has metric={best['metric']!r}, not one of {', '.join(METRICS)}. Fix: {fix}")
    return {"split": "val", "tta": "none", "weights": "raw", "metrics": {}, **best}


def write_best(eval_dir: Path, best: dict, metric: str, direction_setting: str, pairs: list | None) -> Path:
    """best.json (the run's own settings) or best.VARIANT.json (others): the best row, the metric and direction
    that chose it, its weights and variant, the most confused pairs if known."""
    variant = variant_of(best)
    record = {"checkpoint": best["checkpoint"], "epoch": best["epoch"],
              **({"global_step": best["global_step"]} if "global_step" in best else {}), "metric": metric, "direction": direction(metric, direction_setting), "value": best[metric],
              "weights": weights_of(best), "split": best["split"], "tta": best["tta"], "variant": variant,
              "metrics": best}
    if pairs is not None:
        record["confused_pairs"] = pairs
    path = best_path(eval_dir, variant)
    write_json_atomic(path, record)
    return path


def record_test_look(eval_dir: Path, checkpoint_name: str, tta: str, top1: float, variant: str = "",
                     weights: str = "raw") -> None:
    """Append this look at the test split to the run's ledger (with the weights looked with, where not the raw
    ones); warn if it is not the first."""
    if not inside_run(Path(eval_dir).parent, checkpoint_name):
        raise UserError(f"{checkpoint_name} lies outside the run {Path(eval_dir).parent}: the run's test ledger "
                        "records only its own checkpoints. Fix: look at the test split in that checkpoint's own run")
    ledger = eval_dir / "test_ledger.jsonl"
    looks = []
    for number, look in read_records(ledger, records.LOOK, "not counted as a look"):
        if inside_run(Path(eval_dir).parent, look["checkpoint"]):
            looks.append(look)
        else:
            warn_once(f"{ledger} line {number} names checkpoint {look['checkpoint']!r}, outside the run: not "
                      "counted as a look at this run's test split")
    if looks:
        log.warning("the test split of this run has been looked at %d time(s) before (first %s, %s): results chosen "
                    "after looking are no longer an unbiased estimate. Tune on val; test once.",
                    len(looks), looks[0]["time"], looks[0]["checkpoint"] + (
                        "" if weights_of(looks[0]) == "raw" else f" ({weights_of(looks[0])})"))  # no key: raw
    look = {"time": now(), "checkpoint": checkpoint_name, "tta": tta, "top1": top1}
    look = {**look, "variant": variant} if variant else look
    append_line(ledger, json.dumps({**look, "weights": weights} if weights != "raw" else look))
