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
from runner.evaluation import fold_rules, metrics, predictions, results, variants
from runner.evaluation.evaluator import evaluate_one, evaluate_run
from runner.evaluation.run_differences import run_config
from runner.evaluation.run_dirs import run_directory
from runner.evaluation.weight_names import wanted

log = logging.getLogger("runner.evaluate")


def members_of(settings: DictConfig) -> list[tuple[Path, Path]]:
    """(run_dir, checkpoint) of each member, chosen on the validation split among the rows of the asked weights
    (weights=raw: each run's best raw checkpoint, not the raw weights of its best ema one)."""
    val = OmegaConf.merge(settings, {"split": "val", "checkpoint": None})
    if settings.ensemble:
        members = []
        for run in settings.ensemble:
            run_dir = run_directory(OmegaConf.merge(val, {"run_dir": run}))
            evaluate_run(run_dir, val)
            order = ranked_of_weights(run_dir, val)
            if not order:
                raise UserError(f"{run_dir} has no checkpoint to evaluate. Fix: train it first, or drop it from ensemble=")
            members.append((run_dir, run_dir / order[0]["checkpoint"]))
        return members
    run_dir = run_directory(val)
    evaluate_run(run_dir, val)
    order = ranked_of_weights(run_dir, val)
    if len(order) < 2:
        raise UserError(f"{run_dir} has {len(order)} evaluated checkpoint(s); an ensemble needs 2. Fix: ensemble_top_k "
                        "needs a run with several checkpoints (checkpoint.every_epochs)")
    return [(run_dir, run_dir / r["checkpoint"]) for r in order[: settings.ensemble_top_k]]


def refuse_test_of_fold_members(settings: DictConfig) -> None:
    """split=test of an ensemble with a member trained on a fold: one line naming it (the evaluator's own rule,
    runner/evaluation/fold_rules.py), unless allow_fold_test=true."""
    if settings.split != "test" or settings.get("allow_fold_test", False):
        return
    plain = OmegaConf.merge(settings, {"checkpoint": None})
    runs = [run_directory(OmegaConf.merge(plain, {"run_dir": run})) for run in settings.ensemble] \
        if settings.ensemble else [run_directory(plain)]
    for run_dir in runs:
        try:
            fold_rules.refuse_test_of_a_fold_run(run_config(run_dir), settings)
        except UserError as refused:
            raise UserError(f"ensemble member {run_dir}: {refused}") from None


def ranked_of_weights(run_dir: Path, val: DictConfig) -> list[dict]:
    """The run's checkpoints best first by validation, each by its best row among the weights asked for."""
    rows = [r for r in results.read_rows(results.eval_dir_of(run_dir)) if r["weights"] in wanted(val.get("weights"))]
    return results.ranked(rows, val.metric, val.direction, None, run_dir, key=variants.settings_key(val))


def evaluate_ensemble(settings: DictConfig) -> dict:
    """Evaluate each member on settings.split, average their probabilities, report all of them."""
    refuse_test_of_fold_members(settings)  # before any member is evaluated or its ledger written
    members = members_of(settings)
    rows, log_probs, labels, variant = [], [], None, ""
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
        labels, variant = member_labels, variants.variant_of(row)
        log_probs.append(member_log_probs)
        weights = results.weights_of(row)
        rows.append({"member": f"{run_dir.name}/{name}" + ("" if weights == "raw" else f" ({weights})"),
                     "weights": weights, **{k: row[k] for k in ("loss", "top1", "top5", "balanced_accuracy")}})
        if settings.split == "test":
            results.record_test_look(eval_dir, name, settings.tta, row["top1"], variants.variant_of(row),
                                     weights=results.weights_of(row))  # the weights it was looked at with
    averaged = torch.logsumexp(torch.stack(log_probs), dim=0) - math.log(len(log_probs))
    summary = metrics.summarize(averaged, labels, averaged.shape[1])
    result = {"split": settings.split, "tta": settings.tta, "weights": str(settings.get("weights") or "all"),
              "precision": str(settings.precision),
              "batch_size": settings.batch_size, "members": rows,
              "ensemble": {k: summary[k] for k in ("n", "loss", "top1", "top5", "balanced_accuracy", "top1_ci95", "ece")}}
    out = ensemble_path(settings, members, variant)
    # its predictions first, beside the summary that names them: `python -m runner.compare RUN ENSEMBLE` pairs them
    saved = predictions_beside(out)
    checkpoint_files.save_atomic({"log_probabilities": averaged, "labels": labels}, saved)
    write_json_atomic(out, {**result, "predictions": saved.name})
    print_ensemble(result)
    print(f"written to {out}")
    return result["ensemble"]


def ensemble_path(settings: DictConfig, members: list[tuple[Path, Path]], variant: str = "") -> Path:
    """A run's top-K ensemble in its eval/, named by the weights asked (where not all) and by how its settings
    differ from the run's own, as a row's predictions are (ensemble_top2.val.json, ensemble_top2.ema.val.json,
    ensemble_top2.val.tta-translate.json): one evaluation never overwrites another's. Across runs: a folder of
    its own, outputs/ensembles/<time>/ensemble.val.json."""
    if settings.ensemble_top_k and not settings.ensemble:
        weights = "" if settings.get("weights") in (None, "all") else f".{settings.weights}"
        slug = f".{variants.variant_slug(variant)}" if variant else ""
        name = f"ensemble_top{settings.ensemble_top_k}{weights}.{settings.split}{slug}.json"
        return results.eval_dir_of(members[0][0]) / name
    return Path("outputs") / "ensembles" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S") / f"ensemble.{settings.split}.json"


def predictions_beside(summary: Path) -> Path:
    """ensemble.val.json -> ensemble.val.pt: the ensemble's log-probabilities and labels, as a row's predictions."""
    return summary.with_name(summary.name.removesuffix(".json") + ".pt")


def print_ensemble(result: dict) -> None:
    tta = f" (tta={result['tta']})" if str(result["tta"]) != "none" else ""
    lines = [f"ensemble on the {result['split']} split{tta}:", f"  {'member':<60} {'loss':>8} {'top-1':>7} {'top-5':>7}"]
    for row in [*result["members"], {"member": "ENSEMBLE (mean probability)", **result["ensemble"]}]:
        lines.append(f"  {row['member']:<60} {row['loss']:>8.4f} {metrics.percent(row['top1']):>7} "
                     f"{metrics.percent(row['top5']):>7}")
    print("\n".join(lines))
