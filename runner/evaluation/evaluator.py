"""python -m runner.evaluate run_dir=outputs/<run> [split=val|test] [watch=true] [tta=flip] [checkpoint=PATH]
[weights=all|raw|ema|swa]

The offline evaluator: every checkpoint of a run that has not been evaluated yet, on the whole
split, in eval mode, with the model and data built from the checkpoint's own saved config (not
from today's conf/); each weights it holds (raw, and the averaged ema/swa: averaged_weights.py)
is a row of its own. Rows, best.json, predictions and the test ledger go into the run's eval/
(results.py), figures of the best checkpoint too (best_checkpoint.py, reports.py), and curves to
the run's TensorBoard logs under eval/ at each checkpoint's global step.

This module decides what is evaluated (which checkpoints and weights are pending, the test look) and
builds a checkpoint's model; the data its config builds is saved_splits.py's, and one weights' row
(loaded, swa BatchNorm recomputed, predicted, saved, logged) weights_evaluation.py's.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from runner.common import checkpoint_files, stop_signals
from runner.common.errors import UserError, one_line
from runner.common.io import remove_stale_temporaries
from runner.common.run_folders import relative, tensorboard_folder
from runner.common.runtime import pick_device
from runner.common.trust import require_trusted
from runner.data import loaders
from runner.evaluation import (
    averaged_weights,
    best_checkpoint,
    dynamics,
    fold_rules,
    results,
    run_differences,
    variants,
    weights_evaluation,
)
from runner.evaluation.checkpoint_model import model_of_checkpoint  # noqa: F401 (report_views, tests)
from runner.evaluation.inference import assert_eval_mode, predict  # noqa: F401 (scripts/benchmark.py)
from runner.evaluation.run_dirs import refuse_light, run_checkpoints
from runner.evaluation.saved_splits import split_dataset
from runner.evaluation.tables import print_table, warn_if_flipping_hurts
from runner.evaluation.weight_names import WEIGHTS, wanted, weights_of

log = logging.getLogger("runner.evaluate")  # also when run as __main__


# ---------------------------------------------------------------------------------------------
# one checkpoint


def evaluate_checkpoint(path: Path, run_dir: Path, settings: DictConfig, writer, strict: bool = False,
                        weights: tuple[str, ...] = WEIGHTS) -> list[dict] | None:
    """Evaluate one checkpoint's `weights` (those of them it holds), save their predictions, log their curves;
    their rows, raw first.

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
    held = averaged_weights.held(state, path)
    if not any(w in held for w in weights):
        log.warning("%s holds no %s weights (it holds %s): nothing evaluated", name, " or ".join(weights), ", ".join(held))
    rows = []
    for chosen in [w for w in held if w in weights]:
        if chosen != "raw" and not weights_evaluation.load_averaged(model, held[chosen], chosen, path):
            del held[chosen]  # not counted as held: not tried again at each evaluation
            continue
        if chosen == "swa":
            weights_evaluation.recompute_swa_statistics(model, state["config"], settings, device, workers, name)
        rows.append(weights_evaluation.evaluate_weights(model, loader, len(dataset), dataset_cfg, settings, device,
                                                        state, name, chosen, run_dir))
    for row in rows:
        row["weights_held"] = list(held)
        if writer is not None:  # None: a light checkpoint, predicted for eval/dynamics.png alone
            weights_evaluation.log_row(row, writer)
    return rows


def skipped(error: UserError, strict: bool) -> None:
    """A checkpoint that cannot be evaluated: an error when the user named it, else a warning with the reason;
    the run's other checkpoints are evaluated all the same."""
    if strict:
        raise error
    log.warning("skipped, not counted as evaluated (the other checkpoints are): %s", one_line(error))


# ---------------------------------------------------------------------------------------------
# whole runs


def evaluate_run(run_dir: Path, settings: DictConfig, only: Path | None = None) -> dict | None:
    """Evaluate what is new in run_dir on settings.split; returns the best validation row (of any weights: the run's
    best is chosen among all its rows, whichever `weights` this evaluation asked for)."""
    if only is not None:
        refuse_light(only)
    eval_dir = results.eval_dir_of(run_dir)
    with results.log_file(eval_dir), results.locked(eval_dir):
        for folder in (eval_dir, eval_dir / "predictions", eval_dir / "predictions" / "updates"):  # killed writers' files
            remove_stale_temporaries(folder)
        if settings.split == "test":
            return look_at_test(run_dir, settings, only)
        evaluate_pending(run_dir, settings, [only] if only else run_checkpoints(run_dir), strict=only is not None)
        rows = results.read_rows(eval_dir)
        own = results.best_row(rows, settings.metric, settings.direction, None, run_dir, variant="")
        if own is not None:  # the run's result: chosen among the rows of its own evaluation settings only
            best_checkpoint.update_best(run_dir, own, settings)
        key = variants.settings_key(settings)
        mine = [r for r in rows if variants.row_settings(r) == key and r["split"] == "val"
                and r["weights"] in wanted(settings.get("weights"))]
        variant = variants.variant_of(mine[-1]) if mine else ""
        best = own
        if variant:  # other settings than the run's own: their best beside the run's, labelled
            best = results.best_row(rows, settings.metric, settings.direction, None, run_dir, key=key)
            if best is not None:
                written = results.write_best(eval_dir, best, settings.metric, settings.direction, None)
                log.info("%s differs from the run's own evaluation settings: an exploratory evaluation, its best in "
                         "%s; the run's best and figures stay in %s", variant, written, eval_dir / "best.json")
        asked = mine if only is None else [r for r in mine if r["checkpoint"] == relative(only, run_dir)]
        if not asked:
            averaged_weights.refuse_weights_not_held(run_dir, rows, wanted(settings.get("weights")), only)
        marked, note = best, ""
        if best is not None and asked and not any(same_row(r, best) for r in asked):  # weights=raw: best is ema
            marked = results.best_row(asked, settings.metric, settings.direction, None, run_dir, key=key)
            note = f"the run's best is {Path(best['checkpoint']).stem} {weights_of(best)}, not shown"
        print_table(asked, marked, "val", variant, settings.metric, note)  # checkpoint=FILE: that one's row
        if settings.tta == "flip":
            warn_if_flipping_hurts(rows, "val")
        return best


def same_row(row: dict, other: dict) -> bool:
    return (row["checkpoint"], weights_of(row)) == (other["checkpoint"], weights_of(other))


def evaluate_one(run_dir: Path, settings: DictConfig, path: Path, stoppable: bool = False) -> dict | None:
    """Evaluate one checkpoint (unless it already is) and return its row, that of its best weights by validation
    (chosen_weights; on another split only those weights are evaluated); None if unreadable.

    Early stopping and pruning ask between the training loop's updates: the loop has safe points of its own
    (and under torchrun a stop in rank 0's evaluator alone would leave the others waiting), so a stop signal
    stops it only when `stoppable` (an ensemble's members)."""
    eval_dir = results.eval_dir_of(run_dir)
    name, key = relative(path, run_dir), variants.settings_key(settings)
    with results.locked(eval_dir):
        if settings.split == "val":  # in the training loop (early stopping): the light checkpoints wait
            evaluate_pending(run_dir, settings, [path], stoppable=stoppable, dynamics_too=False)
        chosen = chosen_weights(results.read_rows(eval_dir), name, key, settings, run_dir)
        if settings.split != "val":
            evaluate_pending(run_dir, settings, [path], stoppable=stoppable, weights=(chosen,))
    return results.find_row(eval_dir, name, settings.split, key, chosen)


def chosen_weights(rows: list[dict], name: str, key: tuple, settings: DictConfig, run_dir: Path) -> str:
    """The weights a checkpoint is looked at with: those asked for (weights=ema), else its best by validation
    among its rows of these settings (else of the run's own), else the raw ones."""
    if len(wanted(settings.get("weights"))) == 1:
        return wanted(settings.get("weights"))[0]
    its = [r for r in rows if r["checkpoint"] == name]
    best = results.best_row(its, settings.metric, settings.direction, None, run_dir, key=key) or \
        results.best_row(its, settings.metric, settings.direction, None, run_dir, variant="")
    return best["weights"] if best is not None else "raw"


def evaluate_pending(run_dir: Path, settings: DictConfig, paths: list[Path], strict: bool = False,
                     stoppable: bool = True, weights: tuple[str, ...] | None = None, dynamics_too: bool = True) -> int:
    """Evaluate the checkpoints in paths that have no row yet for this split, these settings (tta, precision,
    batch size) and each of the `weights` they hold (default: settings.weights; strict: see evaluate_checkpoint).
    Before each one, a stop signal received stops it (unless not `stoppable`): the rows written stay, the rest
    is for the same command (stop_if_signalled). On val (when `dynamics_too`), then the light checkpoints and
    eval/dynamics.png (dynamics.py), the figure also in TensorBoard at each new row's step."""
    from torch.utils.tensorboard import SummaryWriter

    eval_dir = results.eval_dir_of(run_dir)
    done = results.evaluated(eval_dir)
    held = results.weights_held(results.read_rows(eval_dir))  # unknown before a checkpoint's first row: all asked
    key = variants.settings_key(settings)
    asked = weights or wanted(settings.get("weights"))

    def missing(path: Path) -> tuple[str, ...]:
        name = relative(path, run_dir)
        return tuple(w for w in asked if w in held.get(name, asked) and (name, settings.split, *key, w) not in done)

    pending = [(p, missing(p)) for p in paths if missing(p)]
    dynamic = dynamics_too and settings.split == "val"
    if not pending and not (dynamic and dynamics.behind(run_dir, key)):
        return 0
    evaluated, last, steps = 0, "none", []
    writer = SummaryWriter(tensorboard_folder(run_dir), filename_suffix=".eval")
    try:
        for path, missing_weights in pending:
            if stoppable:
                stop_if_signalled(last)
            for row in evaluate_checkpoint(path, run_dir, settings, writer, strict, missing_weights) or []:
                results.append_row(eval_dir, row)
                evaluated, last = evaluated + 1, row["checkpoint"]
                steps += [row["global_step"]] if row["weights"] == "raw" and row["variant"] == "" else []
        if dynamic and (evaluate_light(run_dir, settings, key, stoppable) or steps or dynamics.missing(run_dir)):
            dynamics.write(run_dir, writer, steps)
    finally:
        writer.close()
    return evaluated


def evaluate_light(run_dir: Path, settings: DictConfig, key: tuple, stoppable: bool) -> int:
    """The light checkpoints (checkpoint.every_updates) not yet predicted, on val with the run's own settings, raw
    weights: their predictions for eval/dynamics.png alone (eval/predictions/updates/), never a row."""
    pending = dynamics.light_pending(run_dir, key)
    for number, path in enumerate(pending):
        if stoppable:
            stop_if_signalled(relative(pending[number - 1], run_dir) if number else "none")
        evaluate_checkpoint(path, run_dir, settings, None, weights=("raw",))
    if pending:
        log.info("%d light checkpoints of checkpoints/updates/ predicted on val for eval/dynamics.png", len(pending))
    return len(pending)


def stop_if_signalled(last: str = "none") -> None:
    """The evaluator's safe point, between two checkpoints: after a stop signal (SLURM's warning before the time
    limit, SIGTERM, Ctrl-C; runner/common/stop_signals.py) Preempted, naming the last checkpoint evaluated."""
    name = stop_signals.received()
    if name is not None:
        raise stop_signals.Preempted(name, last, -1, "during the evaluation")


def look_at_test(run_dir: Path, settings: DictConfig, only: Path | None) -> dict | None:
    """The final look: the best checkpoint by validation on the test split, recorded in the ledger."""
    fold_rules.refuse_test_of_a_fold_run(run_differences.run_config(run_dir), settings)
    eval_dir = results.eval_dir_of(run_dir)
    key = variants.settings_key(settings)
    if only is None:  # the run's best by validation (of its own settings, where it has rows of them), any weights
        val_settings = OmegaConf.merge(settings, {"split": "val"})
        evaluate_pending(run_dir, val_settings, run_checkpoints(run_dir))
        rows = [r for r in results.read_rows(eval_dir) if r["weights"] in wanted(settings.get("weights"))]
        best = results.best_row(rows, settings.metric, settings.direction, None, run_dir, variant="") or \
            results.best_row(rows, settings.metric, settings.direction, None, run_dir, key=key)
        if best is None:
            raise UserError(f"{run_dir} has no evaluated checkpoint to look at. Fix: train it first")
        only, chosen = run_dir / best["checkpoint"], best["weights"]
    else:
        chosen = chosen_weights(results.read_rows(eval_dir), relative(only, run_dir), key, settings, run_dir)
    name = relative(only, run_dir)
    evaluate_pending(run_dir, settings, [only], strict=True, weights=(chosen,))  # those weights only: one look
    row = results.find_row(eval_dir, name, "test", key, chosen)
    if row is None:
        raise UserError(f"{only} could not be read, or holds no {chosen} weights. Fix: pick another checkpoint=FILE")
    variant = variants.variant_of(row)
    results.record_test_look(eval_dir, name, settings.tta, row["top1"], variant, chosen)
    shown = [r for r in results.read_rows(eval_dir) if variants.row_settings(r) == key and r["weights"] == chosen]
    print_table(shown, row, "test", variant, settings.metric)
    return row

