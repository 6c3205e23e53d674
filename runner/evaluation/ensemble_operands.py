"""python -m runner.compare STUDENT ENSEMBLE: an ensemble as an operand of compare.

An ensemble (`python -m runner.evaluate 'ensemble=[...]'` or `ensemble_top_k=K`) is named by its
summary (ensemble.val.json) or the folder holding it, and paired through the predictions saved
beside it (ensemble.val.pt). It is described in the shape of a run's best.json, its members where a
run's config difference would go; a summary of another shape, or one without its predictions, is
refused in one line with the command that evaluates the ensemble again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from runner.common.errors import UserError
from runner.evaluation import predictions, records


def ensemble_summary(path: Path) -> Path | None:
    """The ensemble summary an operand names: the .json itself, or the one in its folder (outputs/ensembles/<time>/);
    None for a run folder or a checkpoint file."""
    if path.is_file():
        return path if path.suffix == ".json" else None
    if (path / "eval").is_dir() or (path / "checkpoints").is_dir():
        return None
    found = sorted(path.glob("ensemble*.json"))
    if len(found) > 1:
        raise UserError(f"{path} holds {len(found)} ensemble summaries ({', '.join(f.name for f in found)}). Fix: give "
                        f"one of them, e.g. python -m runner.compare RUN {found[0]}")
    return found[0] if found else None


def again(summary: Path, saved: dict) -> str:
    """The command that evaluates an ensemble again (and saves its predictions beside its summary)."""
    split, tta = saved.get("split", "val"), saved.get("tta", "none")
    weights = f" weights={saved['weights']}" if saved.get("weights") not in (None, "all") else ""  # older: all
    if summary.name.startswith("ensemble_top"):
        return f"python -m runner.evaluate run_dir={summary.parent.parent} ensemble_top_k={len(saved['members'])} " \
               f"split={split} tta={tta}{weights}"
    return f"python -m runner.evaluate 'ensemble=[RUN_A,RUN_B,...]' split={split} tta={tta}{weights} (the same members)"


def ensemble_predictions(summary: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """(a best.json-shaped description of the ensemble, predicted classes, labels) from its summary and the
    predictions saved beside it; a summary of another shape, or without them, is a one-line UserError."""
    try:
        saved = json.loads(summary.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{summary} cannot be read as an ensemble summary ({type(error).__name__}). Fix: give a run "
                        "folder, a checkpoint, or the ensemble.SPLIT.json `python -m runner.evaluate 'ensemble=[...]'` "
                        "wrote") from None
    summary_of = saved.get("ensemble") if isinstance(saved, dict) else None
    if not (isinstance(summary_of, dict) and records.is_kind(summary_of.get("top1"), "number")
            and isinstance(saved.get("members"), list) and saved.get("split") in ("val", "test")):
        raise UserError(f"{summary} is not an ensemble summary (no split, members and ensemble top-1). Fix: give a run "
                        "folder, a checkpoint, or the ensemble.SPLIT.json `python -m runner.evaluate 'ensemble=[...]'` "
                        "wrote")
    if not isinstance(saved.get("predictions"), str):
        raise UserError(f"{summary} has no saved predictions (an ensemble evaluated before they were saved beside "
                        f"it). Fix: {again(summary, saved)}")
    path = summary.parent / Path(saved["predictions"]).name
    if not path.is_file():
        raise UserError(f"{path} is missing (the ensemble's predictions, named by {summary.name}). Fix: copy it with "
                        f"the summary, or evaluate the ensemble again: {again(summary, saved)}")
    try:
        log_probs, labels = predictions.load_predictions_file(path, summary.parent)
    except UserError as error:
        raise UserError(f"{str(error).split(' Fix: ')[0]} Fix: {again(summary, saved)}") from None
    members = [str(m.get("member")) if isinstance(m, dict) else str(m) for m in saved["members"]]
    described = f"an ensemble of {len(members)} members (tta={saved.get('tta', 'none')}): {', '.join(members)}"
    best = {"checkpoint": f"an ensemble of {len(members)} members", "metric": "top1", "direction": "max",
            "value": summary_of["top1"], "split": saved["split"], "tta": saved.get("tta", "none"),
            "metrics": summary_of, "ensemble": described}
    return best, log_probs.argmax(dim=1).numpy(), labels.numpy()


def in_metric_of(ensemble: dict, other: dict) -> dict:
    """The ensemble's value in the metric the other operand (a run) was chosen by, where the summary holds it."""
    metric = other["metric"]
    if "ensemble" in other or not records.is_kind(ensemble["metrics"].get(metric), "number"):
        return ensemble
    return {**ensemble, "metric": metric, "direction": other.get("direction", "auto"),
            "value": ensemble["metrics"][metric]}
