"""python -m runner.evaluate run_dir=outputs/<run> [split=val|test] [watch=true] [tta=flip] [checkpoint=PATH]

The offline evaluator: every checkpoint of a run that has not been evaluated yet, on the whole
split, in eval mode, with the model and data built from the checkpoint's own saved config (not
from today's conf/). Rows, best.json, predictions and the test ledger go into the run's eval/
(results.py), figures of the best checkpoint too (reports.py), and curves to the run's
TensorBoard logs under eval/ at each checkpoint's global step.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from runner import models
from runner.common import checkpoint_files, stop_signals
from runner.common.errors import UserError, one_line
from runner.common.io import remove_stale_temporaries
from runner.common.provenance import now
from runner.common.run_folders import relative, tensorboard_folder
from runner.common.runtime import autocast_dtype, pick_device
from runner.common.trust import require_trusted
from runner.data import datasets, loaders
from runner.data.settings import validate as validate_dataset
from runner.evaluation import metrics, predictions, reports, results, variants
from runner.evaluation.inference import assert_eval_mode, predict  # noqa: F401 (assert_eval_mode: for tests)
from runner.evaluation.metric_names import METRICS
from runner.evaluation.run_dirs import run_checkpoints
from runner.evaluation.tables import print_table, warn_if_flipping_hurts

log = logging.getLogger("runner.evaluate")  # also when run as __main__


# ---------------------------------------------------------------------------------------------
# one checkpoint


def model_of_checkpoint(config: dict, state: dict, path: Path, device: torch.device, trusted: list[str]) -> torch.nn.Module:
    """The checkpoint's model, from its own config, in eval mode; only trusted callables are called."""
    require_trusted(config, trusted, source=str(path))  # the model and the data
    model_cfg = models.without_pretrained_weights(config["model"])  # the checkpoint holds every weight
    model_cfg.init_output_bias = "none"  # and the bias too
    try:
        model = models.build(model_cfg)
    except InstantiationException as error:  # its arguments do not fit its callable (checked on load for runner's)
        cause = error.__cause__ or error
        first = (str(cause).strip().splitlines() or [""])[0][:200]
        raise UserError(f"{path}: its saved model config does not build ({model_cfg._target_}: {first}). "
                        "Fix: evaluate it with the code and trust=[...] of the run that wrote it") from None
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        first = " ".join(str(error).split())[:240].rstrip(".")  # "Error(s) in loading state_dict for X: ..."
        raise UserError(f"{path} does not fit the model of its config ({model_cfg._target_}): {first}. "
                        "Fix: evaluate it with the run that wrote it") from None
    return model.to(device).eval()


def split_dataset(config: dict, split: str, data_root: str | None):
    """The split as the run built it, from the checkpoint's dataset config (root overridable).

    Built once per run and process: the checkpoints of a run share their dataset config.
    """
    if split not in datasets.SPLITS:
        raise UserError(f"split={split!r} is not a split. Fix: split=val or split=test")
    return built_split(json.dumps(config["dataset"], sort_keys=True), split, data_root)


@functools.lru_cache(maxsize=4)
def built_split(dataset_json: str, split: str, data_root: str | None):
    dataset_cfg = OmegaConf.create(json.loads(dataset_json))
    if data_root is not None:
        dataset_cfg.root = data_root
    try:  # the rules a training config's dataset meets, before anything is built from a saved one
        validate_dataset(dataset_cfg)
    except UserError as error:
        raise UserError(f"its saved dataset config does not hold: {one_line(error)}") from None
    except Exception as error:  # a key missing, a value of another type: not a config runner wrote
        raise UserError(f"its saved dataset config is not one runner writes ({type(error).__name__}: "
                        f"{checkpoint_files.first_sentence(error)}). Fix: pick a checkpoint written by runner") from None
    dataset = datasets.build_splits(dataset_cfg)[split]
    if len(dataset) == 0:
        raise UserError(f"dataset {dataset_cfg.name} has no {split} split here. Fix: split=val")
    return dataset, dataset_cfg


def evaluate_checkpoint(path: Path, run_dir: Path, settings: DictConfig, writer, strict: bool = False) -> dict | None:
    """Evaluate one checkpoint, save its predictions, log its curves.

    An unreadable file is skipped with a warning (None), or, when `strict` (the user named it), an error.
    """
    name = relative(path, run_dir)
    if not results.inside_run(run_dir, name):
        raise UserError(f"{path} lies outside the run {run_dir}: its row would name another run's checkpoint. "
                        "Fix: evaluate it in its own run folder")
    device = pick_device(str(settings.device))
    trusted = list(settings.get("trust") or [])
    try:
        state = checkpoint_files.load(path, parts=checkpoint_files.EVALUATED_PARTS)
    except UserError as error:
        return skipped(error, strict)
    require_trusted(state["config"], trusted, source=str(path))  # untrusted code: a refusal, not a skip
    try:
        model = model_of_checkpoint(state["config"], state, path, device, trusted)
    except UserError as error:
        return skipped(error, strict)
    try:
        dataset, dataset_cfg = split_dataset(state["config"], settings.split, settings.get("data_root"))
    except UserError as error:  # the data of the whole run: an error, not a skip
        raise UserError(f"{path}: {one_line(error)}") from None
    trainer = state["config"]["trainer"]  # the run's own settings where the evaluator's are null
    workers = settings.num_workers if settings.num_workers is not None else trainer["num_workers"]
    batch_size = settings.batch_size if settings.batch_size is not None else trainer["micro_batch_size"]
    loader = loaders.eval_loader(dataset, batch_size, workers, pin_memory=device.type == "cuda", device=device)
    started = time.perf_counter()
    log_probs, labels = predict(model, loader, device, autocast_dtype(settings.precision, device), settings.tta)
    if len(labels) != len(dataset):
        raise RuntimeError(f"evaluated {len(labels)} samples of a split of {len(dataset)}")
    summary = metrics.summarize(log_probs, labels, dataset_cfg.num_classes)
    used = {"tta": str(settings.tta), "precision": str(settings.precision), "batch_size": batch_size}
    row = {
        "checkpoint": name, "epoch": state["epoch"], "global_step": state["global_step"],
        "split": settings.split, "tta": settings.tta, **summary,
        "top1_ci_low": summary["top1_ci95"][0], "top1_ci_high": summary["top1_ci95"][1],
        "seconds": round(time.perf_counter() - started, 3), "evaluated_at": now(),
        # the settings as asked (the key of the row) and how they differ from the run's own ("": not at all)
        "precision": str(settings.precision), "batch_size": settings.batch_size,
        "variant": variants.variant_label(used, variants.own_settings(state["config"])),
    }
    predictions.save_predictions(results.eval_dir_of(run_dir), row, log_probs, labels)
    # the run's own settings: eval/val/...; others: eval/val_flip/..., eval/val_bf16_256/...
    tag = "_".join([settings.split, *(part.split("=", 1)[1] for part in row["variant"].split(", ") if part)])
    for key in (k for k in METRICS if row[k] is not None):
        writer.add_scalar(f"eval/{tag}/{key}", row[key], row["global_step"])
    writer.flush()
    log.info("%s (epoch %d) on %s: loss %.4f, top-1 %.2f%% [%.2f, %.2f], %d samples in %.1f s", row["checkpoint"],
             row["epoch"], row["split"], row["loss"], 100 * row["top1"], 100 * row["top1_ci_low"],
             100 * row["top1_ci_high"], row["n"], row["seconds"])
    return row


def skipped(error: UserError, strict: bool) -> None:
    """A checkpoint that cannot be evaluated: an error when the user named it, else a warning with the reason;
    the run's other checkpoints are evaluated all the same."""
    if strict:
        raise error
    log.warning("skipped, not counted as evaluated (the other checkpoints are): %s", one_line(error))


# ---------------------------------------------------------------------------------------------
# the best checkpoint


def update_best(run_dir: Path, best: dict, settings: DictConfig) -> None:
    """best.json (the best of the run's own settings), with the confusion matrix, confused pairs and galleries
    redrawn when the best changed."""
    eval_dir = results.eval_dir_of(run_dir)
    try:
        previous = results.read_best(eval_dir)
    except UserError as error:
        log.warning("%s: written again", one_line(error).split(". Fix:")[0])
        previous = {}
    same = all(previous.get(key) == best[key] for key in ("checkpoint", "split", "tta")) and \
        previous.get("variant", "") == ""
    pairs = previous.get("confused_pairs")
    if settings.galleries and not (same and reports.figures_exist(eval_dir)):
        pairs = draw_figures(run_dir, best, settings.get("data_root"))
        log.info("figures of the best checkpoint (%s) in %s", best["checkpoint"], eval_dir)
    results.write_best(eval_dir, best, settings.metric, settings.direction, pairs)


def draw_figures(run_dir: Path, best: dict, data_root: str | None) -> list[dict]:
    """The figures of a row's checkpoint, from its saved predictions and its own data split."""
    eval_dir = results.eval_dir_of(run_dir)
    log_probs, labels = predictions.load_row_predictions(eval_dir, best)
    config = checkpoint_files.load(run_dir / best["checkpoint"], parts=("config",))["config"]
    dataset, dataset_cfg = split_dataset(config, best["split"], data_root)
    return reports.best_checkpoint_figures(log_probs, labels, dataset, dataset_cfg, eval_dir)


# ---------------------------------------------------------------------------------------------
# whole runs


def evaluate_run(run_dir: Path, settings: DictConfig, only: Path | None = None) -> dict | None:
    """Evaluate what is new in run_dir on settings.split; returns the best validation row."""
    eval_dir = results.eval_dir_of(run_dir)
    with results.log_file(eval_dir), results.locked(eval_dir):
        for folder in (eval_dir, eval_dir / "predictions"):  # files an evaluator killed mid-write left
            remove_stale_temporaries(folder)
        if settings.split == "test":
            return look_at_test(run_dir, settings, only)
        evaluate_pending(run_dir, settings, [only] if only else run_checkpoints(run_dir), strict=only is not None)
        rows = results.read_rows(eval_dir)
        own = results.best_row(rows, settings.metric, settings.direction, None, run_dir, variant="")
        if own is not None:  # the run's result: chosen among the rows of its own evaluation settings only
            update_best(run_dir, own, settings)
        key = variants.settings_key(settings)
        mine = [r for r in rows if variants.row_settings(r) == key and r["split"] == "val"]
        variant = variants.variant_of(mine[-1]) if mine else ""
        best = own
        if variant:  # other settings than the run's own: their best beside the run's, labelled
            best = results.best_row(rows, settings.metric, settings.direction, None, run_dir, key=key)
            if best is not None:
                written = results.write_best(eval_dir, best, settings.metric, settings.direction, None)
                log.info("%s differs from the run's own evaluation settings: an exploratory evaluation, its best in "
                         "%s; the run's best and figures stay in %s", variant, written, eval_dir / "best.json")
        asked = mine if only is None else [r for r in mine if r["checkpoint"] == relative(only, run_dir)]
        print_table(asked, best, "val", variant, settings.metric)  # checkpoint=FILE: that one's row
        if settings.tta == "flip":
            warn_if_flipping_hurts(rows, "val")
        return best


def evaluate_one(run_dir: Path, settings: DictConfig, path: Path, stoppable: bool = False) -> dict | None:
    """Evaluate one checkpoint (unless it already is) and return its row; None if unreadable.

    Early stopping and pruning ask between the training loop's updates: the loop has safe points of its own
    (and under torchrun a stop in rank 0's evaluator alone would leave the others waiting), so a stop signal
    stops it only when `stoppable` (an ensemble's members)."""
    eval_dir = results.eval_dir_of(run_dir)
    with results.locked(eval_dir):
        evaluate_pending(run_dir, settings, [path], stoppable=stoppable)
    return results.find_row(eval_dir, relative(path, run_dir), settings.split, variants.settings_key(settings))


def evaluate_pending(run_dir: Path, settings: DictConfig, paths: list[Path], strict: bool = False,
                     stoppable: bool = True) -> int:
    """Evaluate the checkpoints in paths that have no row yet for this split and these settings (tta, precision,
    batch size; strict: see evaluate_checkpoint). Before each one, a stop signal received stops it (unless not
    `stoppable`): the rows written stay, the rest is for the same command (stop_if_signalled)."""
    from torch.utils.tensorboard import SummaryWriter

    eval_dir = results.eval_dir_of(run_dir)
    done = results.evaluated(eval_dir)
    key = variants.settings_key(settings)
    pending = [p for p in paths if (relative(p, run_dir), settings.split, *key) not in done]
    if not pending:
        return 0
    evaluated, last = 0, "none"
    writer = SummaryWriter(tensorboard_folder(run_dir), filename_suffix=".eval")
    try:
        for path in pending:
            if stoppable:
                stop_if_signalled(last)
            row = evaluate_checkpoint(path, run_dir, settings, writer, strict)
            if row is not None:
                results.append_row(eval_dir, row)
                evaluated, last = evaluated + 1, row["checkpoint"]
    finally:
        writer.close()
    return evaluated


def stop_if_signalled(last: str = "none") -> None:
    """The evaluator's safe point, between two checkpoints: after a stop signal (SLURM's warning before the time
    limit, SIGTERM, Ctrl-C; runner/common/stop_signals.py) Preempted, naming the last checkpoint evaluated."""
    name = stop_signals.received()
    if name is not None:
        raise stop_signals.Preempted(name, last, -1, "during the evaluation")


def look_at_test(run_dir: Path, settings: DictConfig, only: Path | None) -> dict | None:
    """The final look: the best checkpoint by validation on the test split, recorded in the ledger."""
    eval_dir = results.eval_dir_of(run_dir)
    key = variants.settings_key(settings)
    if only is None:  # the run's best by validation (of its own settings, where it has rows of them)
        val_settings = OmegaConf.merge(settings, {"split": "val"})
        evaluate_pending(run_dir, val_settings, run_checkpoints(run_dir))
        rows = results.read_rows(eval_dir)
        best = results.best_row(rows, settings.metric, settings.direction, None, run_dir, variant="") or \
            results.best_row(rows, settings.metric, settings.direction, None, run_dir, key=key)
        if best is None:
            raise UserError(f"{run_dir} has no evaluated checkpoint to look at. Fix: train it first")
        only = run_dir / best["checkpoint"]
    name = relative(only, run_dir)
    evaluate_pending(run_dir, settings, [only], strict=True)
    row = results.find_row(eval_dir, name, "test", key)
    if row is None:
        raise UserError(f"{only} could not be read. Fix: pick another checkpoint=FILE")
    variant = variants.variant_of(row)
    results.record_test_look(eval_dir, name, settings.tta, row["top1"], variant)
    shown = [r for r in results.read_rows(eval_dir) if variants.row_settings(r) == key]
    print_table(shown, row, "test", variant, settings.metric)
    return row


# ---------------------------------------------------------------------------------------------
# following a run while it trains
