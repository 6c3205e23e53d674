"""When training stops early: `python -m runner trainer.early_stopping.patience=5`.

The evaluator measures every checkpoint (offline, as always: the same code as `runner.evaluate`);
after each checkpoint, training asks here whether evaluate.metric has improved on the best so
far within the last `patience` checkpoints. The answer depends on the evaluator's rows alone,
so a resumed or rerun job decides the same way. A checkpoint that holds averaged weights (ema,
swa) counts with its best row: the run's best, like best.json, is chosen among all of them.
"""

from __future__ import annotations

from runner.evaluation.metric_names import direction


def checkpoints_since_best(values: list[float], higher_is_better: bool, min_delta: float) -> int:
    """How many values came after the last one that beat the best before it by more than min_delta."""
    best, since = None, 0
    for value in values:
        if best is None or (value > best + min_delta if higher_is_better else value < best - min_delta):
            best, since = value, 0
        else:
            since += 1
    return since


def stop_reason(rows: list[dict], settings, patience: int, min_delta: float) -> str | None:
    """Why to stop, with the figures, when the metric has not improved for `patience` checkpoints; else None."""
    from runner.evaluation.variants import other_than_tta

    # the run's own rows: an exploratory evaluation (another precision or batch size) beside it does not count
    own = [r for r in rows if r["split"] == "val" and r["tta"] == settings.tta and not other_than_tta(r)]
    higher = direction(settings.metric, settings.direction) == "max"
    best_of: dict[str, dict] = {}  # each checkpoint's best row among its weights (the first of equals: raw first)
    for r in own:
        kept = best_of.get(r["checkpoint"])
        if kept is None or (r[settings.metric] > kept[settings.metric] if higher
                            else r[settings.metric] < kept[settings.metric]):
            best_of[r["checkpoint"]] = r
    ordered = sorted(best_of.values(), key=lambda r: r["epoch"])
    values = [r[settings.metric] for r in ordered]
    since = checkpoints_since_best(values, higher, min_delta)
    if since < patience:
        return None
    best = ordered[len(values) - since - 1]
    recent = ", ".join(f"{r[settings.metric]:.4f} (epoch {r['epoch']})" for r in ordered[-since:])
    return (f"val {settings.metric} has not improved on {best[settings.metric]:.4f} (epoch {best['epoch']}) for "
            f"{since} checkpoints: {recent} (trainer.early_stopping.patience={patience})")
