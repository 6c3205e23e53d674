"""eval/predictions/: each evaluated checkpoint's log-probabilities and labels, for ensembles, compare and figures.

One file per row: epoch-0003.val.pt for the run's own settings, .val.flip.pt, .val.bf16.b256.pt
for others; averaged weights put theirs after the checkpoint's name (epoch-0003.ema.val.pt,
epoch-0003.swa.val.flip.pt), the raw ones keep the names they always had. A light checkpoint's
(checkpoints/updates/update-00000500.pt, for eval/dynamics.png alone) go into predictions/updates/.
A file that is missing or not of that shape is a one-line UserError naming it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from runner.common import checkpoint_files
from runner.common.errors import UserError
from runner.evaluation.variants import row_settings
from runner.evaluation.weight_names import weights_of


def predictions_path(eval_dir: Path, checkpoint_name: str, split: str, tta: str, precision: str = "32",
                     batch_size: int | None = None, weights: str = "raw") -> Path:
    """eval/predictions/epoch-0003.val.pt, .val.flip.pt, .val.bf16.b256.pt, .ema.val.pt: one file per row;
    eval/predictions/updates/update-00000500.val.pt for a light checkpoint."""
    folder = eval_dir / "predictions" / ("updates" if Path(checkpoint_name).parent.name == "updates" else "")
    stem = Path(checkpoint_name).stem + ("" if weights == "raw" else f".{weights}")
    parts = [tta] if tta != "none" else []
    parts += [precision] if str(precision) != "32" else []
    parts += [f"b{batch_size}"] if batch_size is not None else []
    return folder / ".".join([stem, split, *parts, "pt"])


def predictions_of(eval_dir: Path, row: dict) -> Path:
    """Where the predictions behind a row are saved (a row without `weights`: the raw weights')."""
    return predictions_path(eval_dir, row["checkpoint"], row["split"], *row_settings(row), weights=weights_of(row))


def save_predictions(eval_dir: Path, row: dict, log_probabilities: torch.Tensor, labels: torch.Tensor) -> None:
    """The log-probabilities and labels behind a row, for ensembles and figures: CPU tensors, so that the file
    loads on a machine without the device it was evaluated on."""
    checkpoint_files.save_atomic({"log_probabilities": log_probabilities.cpu(), "labels": labels.cpu()},
                                 predictions_of(eval_dir, row))


def load_predictions(eval_dir: Path, checkpoint_name: str, split: str, tta: str,
                     weights: str = "raw") -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probabilities, labels) of an evaluated checkpoint; a missing or malformed file is a one-line UserError."""
    return load_predictions_file(predictions_path(eval_dir, checkpoint_name, split, tta, weights=weights),
                                 Path(eval_dir).parent)


def load_row_predictions(eval_dir: Path, row: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probabilities, labels) behind a row (or a best.json, whose `metrics` is its row), of the row's weights."""
    row = row.get("metrics") if isinstance(row.get("metrics"), dict) and "checkpoint" in row["metrics"] else row
    return load_predictions_file(predictions_of(eval_dir, row), Path(eval_dir).parent)


def load_predictions_file(path: Path, run_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    fix = (f"delete it and evaluate again (python -m runner.evaluate run_dir={run_dir} evaluates each checkpoint "
           "whose predictions are missing)")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path} is missing (a run copied without eval/predictions/?). Fix: python -m runner.evaluate "
                        f"run_dir={run_dir} (it evaluates each checkpoint whose predictions are missing)") from None
    except Exception as error:
        raise UserError(f"{path} is truncated or not a predictions file ({type(error).__name__}: "
                        f"{checkpoint_files.first_sentence(error)}). "
                        f"Fix: {fix}") from None
    log_probabilities = saved.get("log_probabilities") if isinstance(saved, dict) else None
    labels = saved.get("labels") if isinstance(saved, dict) else None
    if not (isinstance(log_probabilities, torch.Tensor) and log_probabilities.dim() == 2
            and log_probabilities.is_floating_point() and not log_probabilities.is_meta):
        problem = "has no log_probabilities of shape (samples, classes)"
    elif not (isinstance(labels, torch.Tensor) and labels.dim() == 1 and not labels.is_floating_point()
              and not labels.is_complex() and not labels.is_meta):
        problem = "has no integer labels of shape (samples,)"
    elif len(labels) != len(log_probabilities):
        problem = f"has {len(log_probabilities)} rows of log-probabilities for {len(labels)} labels"
    elif len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= log_probabilities.shape[1]):
        problem = f"has labels outside 0..{log_probabilities.shape[1] - 1}"
    else:
        return log_probabilities, labels.long()
    raise UserError(f"{path} {problem}. Fix: {fix}")
