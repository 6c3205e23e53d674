"""One run of `python -m runner`: the training job, then the offline evaluator on its checkpoints.

The stages meet here and nowhere else: training (runner/training/) never imports the checks
or the evaluator; it receives them as hooks (`hooks_for`; runner/training/hooks.py says when each
runs). What this returns is what a sweep optimizes.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from runner.common.errors import UserError
from runner.common.trust import module_of
from runner.config.schema import validate
from runner.tracking.settings import trackers_of
from runner.tracking.sync import Tracking
from runner.training import processes
from runner.training.hooks import Hooks
from runner.training.job import train_job

log = logging.getLogger(__name__)


def train_and_evaluate(cfg: DictConfig, run_dir: Path, entry_checks: dict | None = None) -> dict:
    """Validate, train in run_dir, then evaluate; returns {"train": last epoch's figures, "best": best val row}.

    `entry_checks`: the preflight checks that run the whole job, from the entry (runner/dry_run.py's)."""
    validate(cfg)
    watcher = start_watcher(cfg, run_dir) if cfg.evaluate.during_training else None
    tracking = Tracking(cfg, run_dir) if trackers_of(cfg.logger) and processes.from_environment().is_main else None
    try:
        return train_job(cfg, run_dir, hooks_for(cfg, run_dir, entry_checks, tracking))
    finally:
        if watcher is not None:
            stop_watcher(watcher)
        if tracking is not None:  # after the watcher: its last rows too; a refused run (no run.json) is left alone
            tracking.finish()


def hooks_for(cfg: DictConfig, run_dir: Path, entry_checks: dict | None, tracking: Tracking | None = None) -> Hooks:
    """The checks, the evaluator and the trackers, as training calls them (runner/training/hooks.py says when)."""
    return Hooks(
        preflight=((lambda splits, device: preflight(cfg, run_dir, splits, device, entry_checks))
                   if cfg.checks.preflight else None),
        best_checkpoint=lambda: best_checkpoint_so_far(run_dir, cfg),
        validation_metric=lambda path: validation_metric(run_dir, cfg, path),
        stop_early=after_each_checkpoint(cfg, run_dir, tracking),
        evaluate=(lambda: evaluate_after_training(run_dir, cfg)) if cfg.evaluate.after_training else None,
    )


def after_each_checkpoint(cfg: DictConfig, run_dir: Path, tracking: Tracking | None):
    """The hook after each checkpoint: trainer.early_stopping's question, then the trackers' sync (logger=[...]);
    it answers why to stop, or None. Set alike in every process when either is on (the loop's agreement on
    stopping is collective); the sync is rank 0's (`tracking` is None elsewhere)."""
    patience = cfg.trainer.early_stopping.patience
    if not patience and not trackers_of(cfg.logger):
        return None

    def stop_early(path: Path) -> str | None:
        why = evaluate_and_ask_to_stop(run_dir, cfg, path) if patience else None
        if tracking is not None:
            tracking.sync()
        return why

    return stop_early


# what a start writes before the run's own record (run.json): Hydra's, the log, the lock, the provenance's diff
WRITTEN_AT_START = {".hydra", "train.log", ".run.lock", "git.diff", "skipped_images.txt"}


def discard_folder_without_a_run(run_dir: Path, why: str) -> None:
    """A run refused at start (a UserError before its run.json), or a dry run (it trains in a temporary
    folder), leaves no folder behind, as a refused command line does; a folder with anything else in it
    (a run of its own, the user's files) stays."""
    if not run_dir.is_dir() or (run_dir / "run.json").exists():
        return
    if {path.name for path in run_dir.iterdir()} <= WRITTEN_AT_START:
        shutil.rmtree(run_dir)
        log.info("%s removed: %s", run_dir, why)


def start_watcher(cfg: DictConfig, run_dir: Path) -> subprocess.Popen | None:
    """evaluate.during_training: `python -m runner.evaluate run_dir=RUN watch=true` beside the training (rank 0).

    A process of its own, the same code as watch mode: evaluation stays apart from optimization,
    and its curves reach the run's TensorBoard while training goes on.
    """
    if not processes.from_environment().is_main:
        return None
    settings = evaluation_settings(cfg)
    overrides = [f"{key}={override_value(value)}" for key, value in settings.items()
                 if key not in ("after_training", "during_training")]
    command = [sys.executable, "-m", "runner.evaluate", f"run_dir={run_dir}", "watch=true", "poll_seconds=1", *overrides]
    watcher = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log.info("an evaluator follows this run (process %d): its lines are in %s", watcher.pid, run_dir / "eval" / "evaluate.log")
    return watcher


def stop_watcher(watcher: subprocess.Popen) -> None:
    """The watcher ends by itself once run.json says the run has ended; wait for it, within reason."""
    try:
        watcher.wait(timeout=120)
    except subprocess.TimeoutExpired:
        log.warning("the evaluator following this run (process %d) did not end: stopped", watcher.pid)
        watcher.terminate()
        watcher.wait()


def override_value(value) -> str:
    """A config value as Hydra's command line writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | ListConfig):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    return str(value)


def evaluate_after_training(run_dir: Path, cfg: DictConfig) -> dict | None:
    """A separate step, as `python -m runner.evaluate run_dir=...` would do it."""
    from runner.evaluation.evaluator import evaluate_run

    return evaluate_run(run_dir, evaluation_settings(cfg))


def evaluate_and_ask_to_stop(run_dir: Path, cfg: DictConfig, path: Path) -> str | None:
    """After the checkpoint at path: evaluate it (unless the watcher has), then ask trainer.early_stopping."""
    from runner.evaluation import results
    from runner.evaluation.early_stopping import stop_reason
    from runner.evaluation.evaluator import evaluate_one

    settings = evaluation_settings(cfg)
    evaluate_one(run_dir, settings, path)
    stopping = cfg.trainer.early_stopping
    return stop_reason(results.read_rows(run_dir / "eval"), settings, stopping.patience, stopping.min_delta)


def best_checkpoint_so_far(run_dir: Path, cfg: DictConfig) -> Path | None:
    """The best checkpoint the evaluator has ranked in this run (by evaluate.metric), for retention to keep."""
    from runner.evaluation import results

    eval_dir = run_dir / "eval"
    best = results.best_row(results.read_rows(eval_dir), cfg.evaluate.metric, cfg.evaluate.direction,
                            cfg.evaluate.tta, run_dir)
    return None if best is None else run_dir / best["checkpoint"]


def evaluation_settings(cfg: DictConfig) -> DictConfig:
    """cfg.evaluate, trusting the modules of the model, data and loss this run trained on (the user named them:
    the evaluator computes the run's own loss)."""
    own = [module_of(block._target_) for block in (cfg.model, cfg.dataset, cfg.loss) if "_target_" in block]
    return OmegaConf.merge(cfg.evaluate, {"trust": [*cfg.evaluate.trust, *own]})


def validation_metric(run_dir: Path, cfg: DictConfig, path: Path) -> float:
    """One checkpoint's evaluate.metric on the validation split, by the offline evaluator."""
    from runner.evaluation.evaluator import evaluate_one

    row = evaluate_one(run_dir, OmegaConf.merge(evaluation_settings(cfg), {"split": "val"}), path)
    if row is None:
        raise UserError(f"{path} could not be evaluated for pruning. Fix: see the warning above")
    return row[cfg.evaluate.metric]


def preflight(cfg: DictConfig, run_dir: Path, splits: dict, device: torch.device, entry_checks: dict | None) -> None:
    """The fast sanity checks before training; a FAIL stops the run unless checks.strict=false."""
    from runner.checks.registry import PREFLIGHT, run
    from runner.checks.setup import setup_for
    from runner.checks.table import table, write

    setup = setup_for(cfg, device)
    setup.splits = splits
    results = run(setup, PREFLIGHT, entry_checks)
    write(results, run_dir)
    log.info("preflight checks:\n%s", table(results))
    failed = [r for r in results if r.verdict == "FAIL"]
    if failed and cfg.checks.strict:
        raise UserError(f"preflight check {failed[0].check} failed ({failed[0].figure}). Fix: {failed[0].fix}; "
                        "or train anyway with checks.strict=false")
    for result in failed:
        log.warning("preflight check %s failed (checks.strict=false: training anyway): %s", result.check, result.fix)
