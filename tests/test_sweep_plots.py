"""The sweep's figures: named after the objective, whole trial numbers, a colour bar that covers nothing."""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import optuna

from runner.sweep import results


def test_the_plots_are_readable(tmp_path, monkeypatch):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-1, log=True) + t.suggest_int("batch", 32, 256) / 1000
                   + (t.suggest_categorical("schedule", ["cosine", "constant", "warmup_cosine"]) == "cosine"), 9)
    kept = {}
    monkeypatch.setattr(plt, "close", lambda figure: kept.setdefault(len(kept), figure))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # matplotlib's layout warnings would reach the terminal
        results.write_plots(study, tmp_path, objective="val top1")
    history, slices = kept[0], kept[1]
    axes = history.axes[0]
    assert axes.get_ylabel() == "val top1"
    assert all(float(tick).is_integer() for tick in axes.get_xticks())
    renderer = slices.canvas.get_renderer()
    bar = next(a for a in slices.axes if a.get_label() == "<colorbar>")
    panels = [a for a in slices.axes if a is not bar]
    assert len(panels) == 3 and all(bar.get_window_extent(renderer).x0 > p.get_window_extent(renderer).x1
                                    for p in panels)  # the colour bar beside the panels, not over one
    assert (tmp_path / "slice.png").is_file() and (tmp_path / "optimization_history.png").is_file()
