"""python -m runner.evaluate run_dir=RUN [galleries=false]: best.json and the figures of the best checkpoint.

The run's best row (chosen among the rows of its own evaluation settings, any weights) goes into
eval/best.json; when it names another checkpoint, split, tta or weights than before (or the figures
are missing), the confusion matrix, the confused pairs and the loss galleries are drawn again from
that row's saved predictions and the split its checkpoint's config builds (reports.py draws them),
and the first layer's filters from its weights (first_layer.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from runner.common import checkpoint_files
from runner.common.errors import UserError, one_line
from runner.evaluation import first_layer, predictions, reports, results
from runner.evaluation.saved_splits import split_dataset

log = logging.getLogger("runner.evaluate")


def update_best(run_dir: Path, best: dict, settings: DictConfig) -> None:
    """best.json (the best of the run's own settings), with the confusion matrix, confused pairs and galleries
    redrawn when the best changed."""
    eval_dir = results.eval_dir_of(run_dir)
    try:
        previous = results.read_best(eval_dir)
    except UserError as error:
        log.warning("%s: written again", one_line(error).split(". Fix:")[0])
        previous = {}
    same = all(previous.get(key) == best[key] for key in ("checkpoint", "split", "tta", "weights")) and \
        previous.get("variant", "") == ""
    pairs = previous.get("confused_pairs")
    figures = settings.galleries and not (same and reports.figures_exist(eval_dir))
    filters = settings.galleries and not (same and (eval_dir / "first_layer.png").exists())
    if figures or filters:
        config = checkpoint_files.load(run_dir / best["checkpoint"], parts=("config",))["config"]
        dataset, dataset_cfg = split_dataset(config, best["split"], settings.get("data_root"))
    if figures:
        pairs = draw_figures(run_dir, best, dataset, dataset_cfg)
        log.info("figures of the best checkpoint (%s, %s weights) in %s", best["checkpoint"], best["weights"], eval_dir)
    if filters:
        draw_first_layer(run_dir, best, dataset, list(settings.get("trust") or []))
    results.write_best(eval_dir, best, settings.metric, settings.direction, pairs)


def draw_figures(run_dir: Path, best: dict, dataset, dataset_cfg) -> list[dict]:
    """The figures of a row's checkpoint, from its saved predictions and its own data split."""
    eval_dir = results.eval_dir_of(run_dir)
    log_probs, labels = predictions.load_row_predictions(eval_dir, best)
    return reports.best_checkpoint_figures(log_probs, labels, dataset, dataset_cfg, eval_dir)


def draw_first_layer(run_dir: Path, best: dict, dataset, trusted: list[str]) -> None:
    """eval/first_layer.png (first_layer.py) of the best row's checkpoint; one that cannot be drawn is a warning:
    best.json and the other figures are written all the same."""
    try:
        first_layer.draw(run_dir, best, dataset[0][0], trusted)
    except UserError as error:
        log.warning("first_layer.png not drawn: %s", one_line(error))
