"""python -m runner.evaluate run_dir=RUN [galleries=false]: best.json and the figures of the best checkpoint.

The run's best row (chosen among the rows of its own evaluation settings, any weights) goes into
eval/best.json; when it names another checkpoint, split, tta or weights than before (or the figures
are missing), the confusion matrix, the confused pairs and the loss galleries are drawn again from
that row's saved predictions and the split its checkpoint's config builds (reports.py draws them).
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from runner.common import checkpoint_files
from runner.common.errors import UserError, one_line
from runner.evaluation import predictions, reports, results
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
    if settings.galleries and not (same and reports.figures_exist(eval_dir)):
        pairs = draw_figures(run_dir, best, settings.get("data_root"))
        log.info("figures of the best checkpoint (%s, %s weights) in %s", best["checkpoint"], best["weights"], eval_dir)
    results.write_best(eval_dir, best, settings.metric, settings.direction, pairs)


def draw_figures(run_dir: Path, best: dict, data_root: str | None) -> list[dict]:
    """The figures of a row's checkpoint, from its saved predictions and its own data split."""
    eval_dir = results.eval_dir_of(run_dir)
    log_probs, labels = predictions.load_row_predictions(eval_dir, best)
    config = checkpoint_files.load(run_dir / best["checkpoint"], parts=("config",))["config"]
    dataset, dataset_cfg = split_dataset(config, best["split"], data_root)
    return reports.best_checkpoint_figures(log_probs, labels, dataset, dataset_cfg, eval_dir)
