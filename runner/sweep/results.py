"""A sweep's results in its directory: trials.csv, optimization_results.yaml, plots, coarse-to-fine.

Rewritten after every batch of trials, so an interrupted sweep still leaves its results.
"""

from __future__ import annotations

import logging
import shlex
import socket
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import optuna
from omegaconf import OmegaConf
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from runner.common.io import write_atomic, write_csv_atomic, write_text_atomic
from runner.sweep import conditions, repeats
from runner.sweep.space import as_overrides, end_overrides, narrowed, parse
from runner.sweep.study import COPIED

log = logging.getLogger("runner.sweep")
MIN_IMPORTANCE_TRIALS = 8  # fANOVA's importances from fewer trials rank the noise


def objective_names(study: optuna.Study) -> list[str]:
    """["value"] for one objective, else the objectives' names (hydra.sweeper.objectives)."""
    return study.metric_names if len(study.directions) > 1 and study.metric_names else ["value"]


def write_trials_csv(study: optuna.Study, sweep_dir: Path) -> None:
    trials = study.get_trials(deepcopy=False)
    params = {t.number: t.params or queued_params(t) for t in trials}  # WAITING: enqueued ones
    names = sorted({key for p in params.values() for key in p})
    values = objective_names(study)
    spread = ["std", "n"] if any("n" in t.user_attrs for t in trials) else []  # hydra.sweeper.repeats: value is the mean
    rows = []
    for t in trials:
        duration = t.duration.total_seconds() if t.duration else None
        attrs = t.system_attrs
        reason = attrs.get("runner:fail_reason") or (f"copied from {attrs[COPIED]}" if attrs.get(COPIED) else "")
        rows.append([t.number, t.state.name, *(params[t.number].get(n) for n in names), *(t.values or [None] * len(values)),
                     *(t.user_attrs.get(key) for key in spread), None if duration is None else round(duration, 2), attrs.get("runner:run_dir"), reason,
                     attrs.get("runner:host")])
    write_csv_atomic(sweep_dir / "trials.csv",
                     ["number", "state", *names, *values, *spread, "duration_s", "run_dir", "reason", "host"], rows)


def place(sweep_dir: Path, run_dir: str | None, host: str | None, copied_from: str | None = None) -> str:
    """Where a trial's run folder is, as printed: its path, and the host it is on when that is another machine
    whose folder is not here (workers on several nodes without a shared filesystem)."""
    if run_dir is None:
        return f"copied from {copied_from}" if copied_from else "added to the study by hand"
    path = sweep_dir / run_dir
    if host and host != socket.gethostname() and not path.exists():
        return f"{path} on host {host} (not on this machine)"
    return str(path)


def whereabouts(trial) -> dict:
    """A trial's run folder (in the sweep folder), its host, and the sweep it was copied from, as the results
    file records them."""
    attrs = trial.system_attrs
    return {"run_dir": attrs.get("runner:run_dir"), "run_host": attrs.get("runner:host"),
            **({"copied_from": attrs[COPIED]} if attrs.get(COPIED) else {})}


def queued_params(trial) -> dict:
    """The parameters a queued trial was given, where they are a mapping (a crafted trial's may be anything)."""
    given = trial.system_attrs.get("fixed_params")
    return {k: v for k, v in given.items() if isinstance(k, str)} if isinstance(given, dict) else {}


def write_best(study: optuna.Study, sweep_dir: Path, fixed: list[str], space: dict[str, BaseDistribution],
               refused: Callable[[str], str | None] = lambda override: None) -> dict | None:
    """optimization_results.yaml: the best trial and the overrides that reproduce it, plus coarse-to-fine:
    narrowed ranges whose ends `refused` (the runner's own validation) takes; it names the others."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        write_text_atomic(sweep_dir / "optimization_results.yaml", OmegaConf.to_yaml(OmegaConf.create(
            {"study": study.study_name, "best_value": None, "note": "no trial completed: see trials.csv"})))
        return None
    if len(study.directions) > 1:
        return write_pareto_front(study, sweep_dir, fixed, space, refused)
    best = study.best_trial
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    ranked = best_first(study)
    top = ranked[: max(3, len(ranked) // 4)]
    tied = repeats.indistinguishable(ranked)  # with repeats: trials the best cannot be told from join the top
    top += [t for t in tied if t not in top]
    results = {
        "study": study.study_name,
        "direction": "maximize" if maximize else "minimize",
        "best_value": best.value,
        "best_trial": best.number,
        "best_params": best.params,
        **{f"best_{key}": value for key, value in whereabouts(best).items()},
        "reproduce": reproduce(fixed, best),
        "trials": trial_counts(study),
        "coarse_to_fine": coarse_to_fine(space, top, refused),
    }
    if tied:
        results["coarse_to_fine"]["noise"] = repeats.note(best, tied)
    write_text_atomic(sweep_dir / "optimization_results.yaml", OmegaConf.to_yaml(OmegaConf.create(results)))
    return results


def write_pareto_front(study: optuna.Study, sweep_dir: Path, fixed: list[str], space: dict[str, BaseDistribution],
                       refused: Callable[[str], str | None]) -> dict:
    """optimization_results.yaml of a multi-objective sweep: the trials no other trial beats on every
    objective, each with its values and the command that reproduces it; coarse-to-fine around them."""
    names = objective_names(study)
    front = best_first(study)
    results = {
        "study": study.study_name,
        "objectives": {name: d.name.lower() for name, d in zip(names, study.directions, strict=True)},
        "pareto_front": [{"trial": t.number, "values": dict(zip(names, t.values, strict=True)), "params": t.params,
                          **whereabouts(t), "reproduce": command([*fixed, *as_overrides(t.params)])} for t in front],
        "trials": trial_counts(study),
        "coarse_to_fine": coarse_to_fine(space, front, refused),
    }
    write_text_atomic(sweep_dir / "optimization_results.yaml", OmegaConf.to_yaml(OmegaConf.create(results)))
    return results


def command(overrides: list[str]) -> str:
    """The command line that runs these overrides, quoted for the shell (Hydra's own quotes kept)."""
    return " ".join(["python -m runner", *map(shlex.quote, overrides)])


def reproduce(fixed: list[str], trial) -> str:
    """The command that reproduces a trial: its one run, or with hydra.sweeper.repeats each of its seeds' runs
    (its value is their mean), one after another."""
    seeds = trial.user_attrs.get("seed_values")
    if not (isinstance(seeds, dict) and len(seeds) > 1):
        return command([*fixed, *as_overrides(trial.params)])
    listed = " ".join(sorted(seeds, key=int))
    return (f"for seed in {listed}; do {command([*repeats.without_seed(fixed), *as_overrides(trial.params)])} "
            f"{repeats.SEED}=$seed; done")


def best_first(study: optuna.Study) -> list:
    """The finished trials best first; with several objectives the Pareto front, by trial number."""
    if len(study.directions) > 1:
        return sorted(study.best_trials, key=lambda t: t.number)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(complete, key=lambda t: t.value, reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)


def trial_counts(study: optuna.Study) -> dict[str, int]:
    return {state.name: sum(t.state == state for t in study.get_trials(deepcopy=False))
            for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}


def coarse_to_fine(space: dict[str, BaseDistribution], top: list, refused: Callable[[str], str | None]) -> dict:
    """The next, narrower sweep around the top trials: ranges whose ends `refused` (the runner's own
    validation, given the overrides of an end's conditions and the end) takes; the others are named with the
    reason. Conditions keep the parents' values still swept (hydra.sweeper.when); one none is left of goes."""
    suggestion = []
    lines = narrowed(space, [t.params for t in top])
    when, left_out = conditions.narrowed(space, lines, lambda key, line: parse([f"{key}={line}"], {})[1][key])
    for key, line in lines.items():
        ends = end_overrides(key, parse([f"{key}={line}"], {})[1][key])
        problem = next(filter(None, (refused(*conditions.needs(key, space), end) for end in ends)), None)
        if problem:  # a bug in the narrowing, not the user's: say it rather than print a sweep that fails
            left_out.append(f"{key}={line}: {problem}")
        else:
            suggestion.append(shlex.quote(f"{key}={line}"))
    if when:
        suggestion.append(shlex.quote(when))
    return {"from_top_trials": [t.number for t in top], "overrides": suggestion, "left_out": left_out}


def lay_out(figure) -> None:
    """Room for every panel: the colour bar (slice plots) gets its own margin beside the panels, which share
    the rest of the width (one panel too: no blank quarter), margins in inches hold the objective's name and
    turned tick labels (so that category names do not overlap); a log axis within a decade gets labels."""
    import matplotlib.ticker

    bars = [a for a in figure.axes if a.get_label() == "<colorbar>"]
    panels = [a for a in figure.axes if a not in bars]
    width, height = max(6.4, 3.4 * len(panels) + (1.4 if bars else 0.4)), 4.8
    figure.set_size_inches(width, height)
    for axes in panels:
        axes.tick_params(axis="x", labelrotation=30)
        if axes.get_xscale() == "log":
            label_log_axis(axes.xaxis, *axes.get_xlim())
    if not bars:
        figure.tight_layout()
        return
    left, right, gap, bottom, top = 1.05, 1.3, 0.6, 1.1, 0.6  # inches: y label, colour bar, between, x labels, title
    panel = (width - left - right - gap * (len(panels) - 1)) / len(panels)
    for i, axes in enumerate(panels):  # tight_layout cannot place a colour bar added in figure coordinates
        axes.set_position([(left + i * (panel + gap)) / width, bottom / height, panel / width,
                           (height - bottom - top) / height])
    bars[0].set_position([(width - right + 0.3) / width, bottom / height, 0.15 / width, (height - bottom - top) / height])
    bars[0].yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # trial numbers


def label_log_axis(axis, low: float, high: float) -> None:
    """A learning rate's minor ticks would print over each other: labels at 1, 2, 5 (every digit within a
    factor 3), none in between; within a decade Matplotlib's own locator labels nothing at all."""
    import matplotlib.ticker

    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if high / max(low, 1e-300) < 10:
        subs = (1.0, 2.0, 5.0) if high / low >= 3 else tuple(range(1, 10))
        axis.set_major_locator(matplotlib.ticker.LogLocator(subs=subs))
        axis.set_major_formatter(matplotlib.ticker.LogFormatterSciNotation(labelOnlyBase=False))


def write_plots(study: optuna.Study, sweep_dir: Path, objective: str = "objective") -> None:
    """Optimization history, parameter slices and importances as PNG (each when it can be drawn),
    labelled with the objective's name (e.g. "val top1"), trials counted in whole numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    from optuna.visualization import matplotlib as plots

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    wanted = {"optimization_history": partial(plots.plot_optimization_history, target_name=objective),
              "slice": partial(plots.plot_slice, target_name=objective)}
    if len(complete) >= MIN_IMPORTANCE_TRIALS and len({k for t in complete for k in t.params}) >= 1:
        wanted["param_importances"] = partial(plots.plot_param_importances, target_name=objective)
    elif complete and len(study.directions) == 1:
        log.info("no param_importances.png: %d completed trials, and importances need at least %d (from fewer, "
                 "they are noise)", len(complete), MIN_IMPORTANCE_TRIALS)
    if len(study.directions) > 1:  # one value per trial is not defined: the front of all of them
        wanted = {"pareto_front": partial(plots.plot_pareto_front, target_names=objective_names(study))}
    for name, plot in wanted.items():
        if not complete:
            break
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                axes = plot(study)
            except (ValueError, RuntimeError) as error:  # e.g. importances need parameters that vary
                log.warning("no %s plot: %s", name, error)
                continue
        first = axes.flat[0] if hasattr(axes, "flat") else axes
        if name == "optimization_history":
            first.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        if name == "param_importances":  # what the bars rest on
            first.set_title(f"Hyperparameter importances ({len(complete)} completed trials)", loc="left")
        figure = first.get_figure()
        lay_out(figure)
        write_atomic(sweep_dir / f"{name}.png", partial(figure.savefig, format="png", dpi=100))
        plt.close(figure)
