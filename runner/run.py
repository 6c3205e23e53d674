"""One run of `python -m runner`: the training job, then the offline evaluator on its checkpoints.

The stages meet here and nowhere else: training (runner/training/) never imports the checks
or the evaluator; it receives them as functions. What this returns is what a sweep optimizes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from runner.config import validate
from runner.errors import UserError
from runner.training.job import train_job
from runner.trust import module_of

log = logging.getLogger(__name__)


def train_and_evaluate(cfg: DictConfig, run_dir: Path) -> dict:
    """Validate, train in run_dir, then evaluate; returns {"train": last epoch's figures, "best": best val row}."""
    validate(cfg)
    return train_job(
        cfg, run_dir,
        preflight=(lambda splits, device: preflight(cfg, run_dir, splits, device)) if cfg.checks.preflight else None,
        validation_metric=lambda path: validation_metric(run_dir, cfg, path),
        evaluate=(lambda: evaluate_after_training(run_dir, cfg)) if cfg.evaluate.after_training else None,
        best_checkpoint=lambda: best_checkpoint_so_far(run_dir, cfg),
    )


def evaluate_after_training(run_dir: Path, cfg: DictConfig) -> dict | None:
    """A separate step, as `python -m runner.evaluate run_dir=...` would do it."""
    from runner.evaluation.evaluate import evaluate_run

    return evaluate_run(run_dir, evaluation_settings(cfg))


def best_checkpoint_so_far(run_dir: Path, cfg: DictConfig) -> Path | None:
    """The best checkpoint the evaluator has ranked in this run (by evaluate.metric), for retention to keep."""
    from runner.evaluation import results

    eval_dir = run_dir / "eval"
    best = results.best_row(results.read_rows(eval_dir), cfg.evaluate.metric, cfg.evaluate.direction,
                            cfg.evaluate.tta, run_dir)
    return None if best is None else run_dir / best["checkpoint"]


def evaluation_settings(cfg: DictConfig) -> DictConfig:
    """cfg.evaluate, trusting the modules of the model and data this run trained on (the user named them)."""
    own = [module_of(block._target_) for block in (cfg.model, cfg.dataset) if "_target_" in block]
    return OmegaConf.merge(cfg.evaluate, {"trust": [*cfg.evaluate.trust, *own]})


def validation_metric(run_dir: Path, cfg: DictConfig, path: Path) -> float:
    """One checkpoint's evaluate.metric on the validation split, by the offline evaluator."""
    from runner.evaluation.evaluate import evaluate_one

    row = evaluate_one(run_dir, OmegaConf.merge(evaluation_settings(cfg), {"split": "val"}), path)
    if row is None:
        raise UserError(f"{path} could not be evaluated for pruning. Fix: see the warning above")
    return row[cfg.evaluate.metric]


def preflight(cfg: DictConfig, run_dir: Path, splits: dict, device: torch.device) -> None:
    """The fast sanity checks before training; a FAIL stops the run unless checks.strict=false."""
    from runner.checks.registry import PREFLIGHT, run
    from runner.checks.setup import setup_for
    from runner.checks.table import table, write

    setup = setup_for(cfg, device)
    setup.splits = splits
    results = run(setup, PREFLIGHT)
    write(results, run_dir)
    log.info("preflight checks:\n%s", table(results))
    failed = [r for r in results if r.verdict == "FAIL"]
    if failed and cfg.checks.strict:
        raise UserError(f"preflight check {failed[0].check} failed ({failed[0].figure}). Fix: {failed[0].fix}; "
                        "or train anyway with checks.strict=false")
    for result in failed:
        log.warning("preflight check %s failed (checks.strict=false: training anyway): %s", result.check, result.fix)
