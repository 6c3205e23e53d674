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


def study_of(n_trials: int, objective) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials)
    return study


def test_a_slice_of_one_parameter_fills_its_figure(tmp_path, monkeypatch):
    study = study_of(2, lambda t: t.suggest_float("lr", 2e-4, 6e-4, log=True))  # within one decade
    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    results.write_plots(study, tmp_path, objective="val top1")
    slices = next(f for f in kept if f.axes[0].get_title() == "Slice Plot")
    renderer = slices.canvas.get_renderer()
    bar = next(a for a in slices.axes if a.get_label() == "<colorbar>")
    panel = next(a for a in slices.axes if a is not bar).get_window_extent(renderer)
    width = slices.get_window_extent(renderer).width
    assert bar.get_window_extent(renderer).x0 - panel.x1 < 0.1 * width  # no blank quarter between them
    assert panel.width > 0.6 * width
    axes = slices.axes[0]
    assert axes.yaxis.label.get_window_extent(renderer).x0 >= 0  # the objective's name is not cut off
    assert [t.get_text() for t in axes.get_xticklabels() if t.get_text()]  # the learning rate has tick labels
    assert all(float(tick).is_integer() for tick in bar.get_yticks())  # trials counted in whole numbers


def test_importances_say_how_many_trials_they_rest_on_and_need_eight(tmp_path, monkeypatch, caplog):
    def objective(t):
        return t.suggest_float("lr", 1e-4, 1e-1, log=True) + t.suggest_int("batch", 32, 256) / 1000

    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    results.write_plots(study_of(8, objective), tmp_path, objective="val top1")
    titles = [f.axes[0].get_title(loc="left") for f in kept]
    assert "Hyperparameter importances (8 completed trials)" in titles
    (tmp_path / "param_importances.png").unlink()
    caplog.set_level("INFO", logger="runner.sweep")
    results.write_plots(study_of(7, objective), tmp_path, objective="val top1")
    assert not (tmp_path / "param_importances.png").exists()
    assert "no param_importances.png: 7 completed trials, and importances need at least 8" in caplog.text
