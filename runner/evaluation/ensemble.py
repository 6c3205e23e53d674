"""python -m runner.evaluate 'ensemble=[RUN_A,RUN_B]'   or   run_dir=RUN ensemble_top_k=3

Averages the members' predicted probabilities (each member: the best checkpoint of a run, or
one of the K best checkpoints of one run) and reports the ensemble next to each member, on
the chosen split, with the chosen tta (each member is evaluated with it). Members are evaluated
first where they have not been, with the evaluator. The summary (ensemble.val.json) and the
ensemble's log-probabilities and labels beside it (ensemble.val.pt, a predictions file like a
row's) are what `python -m runner.compare RUN ENSEMBLE` reads.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from runner.common import checkpoint_files
from runner.common.errors import UserError
from runner.common.io import write_json_atomic
from runner.common.run_folders import relative
from runner.evaluation import metrics, predictions, results, variants
from runner.evaluation.evaluator import evaluate_one, evaluate_run
from runner.evaluation.run_dirs import run_directory

log = logging.getLogger("runner.evaluate")


def members_of(settings: DictConfig) -> list[tuple[Path, Path]]:
    """(run_dir, checkpoint) of each member, chosen on the validation split."""
    val = OmegaConf.merge(settings, {"split": "val", "checkpoint": None})
    if settings.ensemble:
        members = []
        for run in settings.ensemble:
            run_dir = run_directory(OmegaConf.merge(val, {"run_dir": run}))
            best = evaluate_run(run_dir, val)
            if best is None:
                raise UserError(f"{run_dir} has no checkpoint to evaluate. Fix: train it first, or drop it from ensemble=")
            members.append((run_dir, run_dir / best["checkpoint"]))
        return members
    run_dir = run_directory(val)
    evaluate_run(run_dir, val)
    order = results.ranked(results.read_rows(results.eval_dir_of(run_dir)), settings.metric, settings.direction,
                           None, run_dir, key=variants.settings_key(val))
    if len(order) < 2:
        raise UserError(f"{run_dir} has {len(order)} evaluated checkpoint(s); an ensemble needs 2. Fix: ensemble_top_k "
                        "needs a run with several checkpoints (checkpoint.every_epochs)")
    return [(run_dir, run_dir / r["checkpoint"]) for r in order[: settings.ensemble_top_k]]


def evaluate_ensemble(settings: DictConfig) -> dict:
    """Evaluate each member on settings.split, average their probabilities, report all of them."""
    members = members_of(settings)
    rows, log_probs, labels = [], [], None
    for run_dir, path in members:
        name = relative(path, run_dir)
        row = evaluate_one(run_dir, settings, path, stoppable=True)  # a stop signal: between two members
        if row is None:
            raise UserError(f"{path} could not be evaluated. Fix: drop it from the ensemble")
        eval_dir = results.eval_dir_of(run_dir)
        member_log_probs, member_labels = predictions.load_row_predictions(eval_dir, row)
        if labels is not None and not torch.equal(labels, member_labels):
            raise UserError(f"{run_dir} was evaluated on different {settings.split} data than the first member. "
                            "Fix: ensemble runs of the same dataset and split")
        labels = member_labels
        log_probs.append(member_log_probs)
        rows.append({"member": f"{run_dir.name}/{name}", **{k: row[k] for k in ("loss", "top1", "top5", "balanced_accuracy")}})
        if settings.split == "test":
            results.record_test_look(eval_dir, name, settings.tta, row["top1"], variants.variant_of(row),
                                     weights=results.weights_of(row))  # the weights it was looked at with
    averaged = torch.logsumexp(torch.stack(log_probs), dim=0) - math.log(len(log_probs))
    summary = metrics.summarize(averaged, labels, averaged.shape[1])
    result = {"split": settings.split, "tta": settings.tta, "precision": str(settings.precision),
              "batch_size": settings.batch_size, "members": rows,
              "ensemble": {k: summary[k] for k in ("n", "loss", "top1", "top5", "balanced_accuracy", "top1_ci95", "ece")}}
    out = ensemble_path(settings, members)
    # its predictions first, beside the summary that names them: `python -m runner.compare RUN ENSEMBLE` pairs them
    saved = predictions_beside(out)
    checkpoint_files.save_atomic({"log_probabilities": averaged, "labels": labels}, saved)
    write_json_atomic(out, {**result, "predictions": saved.name})
    print_ensemble(result)
    print(f"written to {out}")
    return result["ensemble"]


def ensemble_path(settings: DictConfig, members: list[tuple[Path, Path]]) -> Path:
    if settings.ensemble_top_k and not settings.ensemble:
        return results.eval_dir_of(members[0][0]) / f"ensemble_top{settings.ensemble_top_k}.{settings.split}.json"
    return Path("outputs") / "ensembles" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S") / f"ensemble.{settings.split}.json"


def predictions_beside(summary: Path) -> Path:
    """ensemble.val.json -> ensemble.val.pt: the ensemble's log-probabilities and labels, as a row's predictions."""
    return summary.with_name(summary.name.removesuffix(".json") + ".pt")


def print_ensemble(result: dict) -> None:
    lines = [f"ensemble on the {result['split']} split:", f"  {'member':<60} {'loss':>8} {'top-1':>7} {'top-5':>7}"]
    for row in [*result["members"], {"member": "ENSEMBLE (mean probability)", **result["ensemble"]}]:
        lines.append(f"  {row['member']:<60} {row['loss']:>8.4f} {metrics.percent(row['top1']):>7} "
                     f"{metrics.percent(row['top5']):>7}")
    print("\n".join(lines))
