"""python -m runner.evaluate run_dir=RUN watch=true: evaluate each checkpoint as soon as it is complete.

The watcher may run in another process or on another machine than the training run; it starts
before the run has made its folder, and stops once the run's run.json says it has ended.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig

from runner.common.errors import UserError
from runner.evaluation import records, results
from runner.evaluation.evaluator import evaluate_pending, evaluate_run, stop_if_signalled
from runner.evaluation.run_dirs import run_checkpoints, run_directory

log = logging.getLogger("runner.evaluate")


def run_finished(run_dir: Path) -> bool:
    """True once the training run has ended (finished or failed), by its run.json (none yet: not finished).

    A run.json of another shape is a one-line UserError: the watcher could not tell when to stop.
    """
    record = records.read_json_object(
        run_dir / "run.json", records.RUN_RECORD,
        "restore the run's run.json (python -m runner writes it), or evaluate without watch=true")
    return record is not None and record.get("status", "") != "running"


def wait_for_run(settings: DictConfig) -> Path:
    """watch=true may start before the training run has made its directory: wait for it."""
    deadline = time.monotonic() + 60 * settings.idle_minutes
    while True:
        try:
            return run_directory(settings)
        except UserError:
            if time.monotonic() > deadline:
                raise
            stop_if_signalled()
            time.sleep(settings.poll_seconds)


def watch(run_dir: Path, settings: DictConfig) -> dict | None:
    """Evaluate each checkpoint as soon as it is complete; stop after the run has finished."""
    idle_since = time.monotonic()
    log.info("watching %s (every %.1f s)", run_dir, settings.poll_seconds)
    while True:
        finished = run_finished(run_dir)  # read before listing: no checkpoint can appear after it
        eval_dir = results.eval_dir_of(run_dir)
        with results.log_file(eval_dir), results.locked(eval_dir):
            new = evaluate_pending(run_dir, settings, run_checkpoints(run_dir))
        if new:
            idle_since = time.monotonic()
        if finished:
            log.info("the run has finished")
            return evaluate_run(run_dir, settings)
        if time.monotonic() - idle_since > 60 * settings.idle_minutes:
            log.warning("no new checkpoint for %s minutes and the run has not finished: stopping", settings.idle_minutes)
            return evaluate_run(run_dir, settings)
        stop_if_signalled()  # waiting for the next checkpoint: a stop signal stops it at once
        time.sleep(settings.poll_seconds)
