"""What `python -m runner.evaluate` prints: the table of a split's rows, and what tta=flip did to them."""

from __future__ import annotations

import logging
from pathlib import Path

from runner.evaluation import metrics, results
from runner.evaluation.weight_names import WEIGHTS, weights_of

log = logging.getLogger("runner.evaluate")


def warn_if_flipping_hurts(rows: list[dict], split: str) -> None:
    """tta=flip assumes a mirrored image means the same; for digits or text it does not. Say so with figures."""
    def same(r: dict) -> tuple:  # the same checkpoint and weights
        return r["checkpoint"], weights_of(r)

    plain = {same(r): r for r in rows if r["split"] == split and r["tta"] == "none"}
    flipped = [r for r in rows if r["split"] == split and r["tta"] == "flip" and same(r) in plain]
    worse = [r for r in flipped if r["top1"] < plain[same(r)]["top1"]]
    if worse:
        r = max(worse, key=lambda r: r["epoch"])
        log.warning("tta=flip lowers top-1 of %s from %.2f%% to %.2f%% (%d of %d checkpoints worse): mirroring changes "
                    "what these images mean (digits, text, left and right). Fix: evaluate with tta=none",
                    r["checkpoint"], 100 * plain[same(r)]["top1"], 100 * r["top1"], len(worse), len(flipped))
    elif not flipped:
        log.info("tta=flip assumes a mirrored image means the same (not so for digits or text): compare with tta=none")


def print_table(rows: list[dict], best: dict | None, split: str, variant: str, metric: str, note: str = "") -> None:
    """The rows of one split and one evaluation setting; another setting than the run's own is labelled. A
    `weights` column (raw, ema, swa) where a checkpoint held averaged weights; the best row is marked *, and a
    `note` after the title (the run's best where it is not among the rows shown)."""
    shown = sorted((r for r in rows if r["split"] == split), key=lambda r: (r["epoch"], WEIGHTS.index(weights_of(r))))
    averaged = any(weights_of(r) != "raw" for r in shown)
    weights_header = f" {'weights':<7}" if averaged else ""
    header = (f"  {'checkpoint':<28} {'epoch':>5}{weights_header} {'loss':>8} {'xentropy':>8} {'top-1':>7} {'top-5':>7} "
              f"{'bal.acc':>7}")
    said = loss_said(shown)
    title = f"{split} split (best by {metric} marked *{said}):"
    if variant:
        title = (f"{split} split, {variant}: other settings than the run's own, an exploratory evaluation (its best "
                 f"in eval/{results.best_path(Path('.'), variant).name}; the run's best stays in eval/best.json) "
                 f"(best by {metric} marked *{said}):")
    title = title if not note else f"{title.removesuffix(':')} ({note}):"
    lines = [title, header]
    for r in shown:
        mark = "*" if best is not None and (r["checkpoint"], weights_of(r)) == (best["checkpoint"], weights_of(best)) \
            else " "
        weights_cell = f" {weights_of(r):<7}" if averaged else ""
        lines.append(f"{mark} {r['checkpoint']:<28} {r['epoch']:>5}{weights_cell} {r['loss']:>8.4f} "
                     f"{cell(r.get('cross_entropy'))} {metrics.percent(r['top1']):>7} "
                     f"{metrics.percent(r['top5']):>7} {metrics.percent(r['balanced_accuracy']):>7}")
    print("\n".join(lines))


def loss_said(rows: list[dict]) -> str:
    """'; loss: tests.byo_losses.focal' where `loss` is not plain cross-entropy (then xentropy is the same figure)."""
    named = dict.fromkeys(r.get("loss_function", "cross_entropy") for r in rows)
    named.pop("cross_entropy", None)
    return f"; loss: {', '.join(named)}" if named else ""


def cell(value: float | None) -> str:
    """A loss cell; '-' for a row written before cross_entropy had its own column."""
    return f"{value:>8.4f}" if value is not None else f"{'-':>8}"
