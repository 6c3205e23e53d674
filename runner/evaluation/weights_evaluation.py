"""python -m runner.evaluate run_dir=RUN [weights=all|raw|ema|swa]: one row, for one weights of a checkpoint.

The evaluator (evaluator.py) builds a checkpoint's model and loader once and evaluates each weights
it holds in turn: the averaged ones are loaded into that model (left out with a warning when they do
not fit it), the swa weights get their BatchNorm statistics measured again over the training split
without augmentation (averaged_weights.py), and then the split is predicted, summarized into the
row, its predictions saved, its curve written to TensorBoard and its line to the log.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from runner.common.provenance import now
from runner.common.runtime import autocast_dtype
from runner.data import loaders
from runner.evaluation import averaged_weights, metrics, predictions, results, variants
from runner.evaluation.inference import predict
from runner.evaluation.metric_names import METRICS
from runner.evaluation.saved_splits import unaugmented_train_split

log = logging.getLogger("runner.evaluate")


def load_averaged(model: torch.nn.Module, weights: dict, name: str, path: Path) -> bool:
    """The averaged weights into the model; False, with a warning, when they do not fit it."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        first = " ".join(str(error).split())[:200].rstrip(".")
        log.warning("%s: its %s weights do not fit its model (%s): left out, its other weights evaluated",
                    path, name, first)
        return False
    return True


def recompute_swa_statistics(model, config: dict, settings: DictConfig, device, workers: int, name: str) -> None:
    """SWA weights: their BatchNorm statistics measured again over the training split, in micro-batches of the
    run's trainer.micro_batch_size (the batches its statistics were measured on in training); training does not."""
    if not averaged_weights.batch_norm_layers(model):
        return
    train = unaugmented_train_split(config, settings.get("data_root"))
    batch_size = config["trainer"]["micro_batch_size"]
    started = time.perf_counter()
    averaged_weights.recompute_batch_norm(
        model, loaders.eval_loader(train, batch_size, workers, pin_memory=device.type == "cuda", device=device), device)
    log.info("%s: BatchNorm statistics of the swa weights recomputed over the training split (%d samples without "
             "augmentation, micro-batches of %d, a cumulative average as torch.optim.swa_utils.update_bn) in %.1f s",
             name, len(train), batch_size, time.perf_counter() - started)


def evaluate_weights(model, loader, size: int, dataset_cfg, settings: DictConfig, device, state: dict, name: str,
                     weights: str, run_dir: Path) -> dict:
    """The row of checkpoint `name` with the `weights` the model holds now; its predictions saved."""
    started = time.perf_counter()
    log_probs, labels = predict(model, loader, device, autocast_dtype(settings.precision, device), settings.tta)
    if len(labels) != size:
        raise RuntimeError(f"evaluated {len(labels)} samples of a split of {size}")
    own_batch = state["config"]["trainer"]["micro_batch_size"]
    batch_size = settings.batch_size if settings.batch_size is not None else own_batch
    loss = metrics.configured_loss(state["config"], list(settings.get("trust") or []))  # `loss`: the run's own
    summary = metrics.summarize(log_probs, labels, dataset_cfg.num_classes, loss)
    used = {"tta": str(settings.tta), "precision": str(settings.precision), "batch_size": batch_size}
    row = {
        "checkpoint": name, "epoch": state["epoch"], "global_step": state["global_step"], "weights": weights,
        "split": settings.split, "tta": settings.tta, **summary,
        "top1_ci_low": summary["top1_ci95"][0], "top1_ci_high": summary["top1_ci95"][1],
        "seconds": round(time.perf_counter() - started, 3), "evaluated_at": now(),
        # the settings as asked (the key of the row) and how they differ from the run's own ("": not at all)
        "precision": str(settings.precision), "batch_size": settings.batch_size,
        "variant": variants.variant_label(used, variants.own_settings(state["config"])),
    }
    predictions.save_predictions(results.eval_dir_of(run_dir), row, log_probs, labels)
    return row


def log_row(row: dict, writer) -> None:
    """A row's curves to TensorBoard (a look at the test split: a line of text) and its line to the log.

    The run's own settings: eval/val/top1; others: eval/val_flip/top1, eval/val_bf16_256/top1; averaged
    weights under their own tag after the metric's: eval/val/top1/ema."""
    tag = "_".join([row["split"], *(part.split("=", 1)[1] for part in row["variant"].split(", ") if part)])
    suffix = "" if row["weights"] == "raw" else f"/{row['weights']}"
    if row["split"] == "test":  # one look, one point: a line of text, not a chart of one dot for each metric
        figures = ", ".join(f"{key} {row[key]:.4f}" for key in METRICS if row.get(key) is not None)
        writer.add_text(f"eval/{tag}{suffix}", f"{row['checkpoint']} (epoch {row['epoch']}): {figures}",
                        row["global_step"])
    for key in (k for k in METRICS if row[k] is not None and row["split"] != "test"):
        writer.add_scalar(f"eval/{tag}/{key}{suffix}", row[key], row["global_step"])
    writer.flush()
    weights = "" if row["weights"] == "raw" else f", {row['weights']} weights"
    log.info("%s (epoch %d%s) on %s: loss %.4f, top-1 %.2f%% [%.2f, %.2f], %d samples in %.1f s", row["checkpoint"],
             row["epoch"], weights, row["split"], row["loss"], 100 * row["top1"], 100 * row["top1_ci_low"],
             100 * row["top1_ci_high"], row["n"], row["seconds"])
