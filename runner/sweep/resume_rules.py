"""What a resumed study keeps, and what a grid counts: the rules the sweeper applies when the same study is
opened again with other settings (a rerun, another worker, a changed command with the same study name).

A study's objective (its directions, objectives and metric) is refused in one line when the command asks
another: old and new values would be ranked together. sampler=grid on a study of another sampler counts
the points its trials ran, so no point runs twice and none is skipped.
"""

from __future__ import annotations

import logging

import optuna

from runner.common.errors import UserError
from runner.sweep.study import AskTellGridSampler, budget_used, ran_or_runs

log = logging.getLogger("runner.sweep")


def room(study: optuna.Study, n_trials: int) -> int:
    """How many more trials to ask for: the rest of n_trials, and with sampler=grid no more than its points
    that no trial has run."""
    left = n_trials - budget_used(study)
    if isinstance(study.sampler, AskTellGridSampler):
        left = min(left, len(study.sampler.points_left(study)))
    return max(0, left)


def say_grid(study: optuna.Study, n_trials: int) -> int:
    """sampler=grid: the trials the sweep runs in all (n_trials, or fewer where the grid's points run out), said
    in one line; and where trials of another sampler ran some of its points, that they count."""
    size, left, used = len(study.sampler._all_grids), len(study.sampler.points_left(study)), budget_used(study)
    others = [t for t in study.get_trials(deepcopy=False) if ran_or_runs(t) and "grid_id" not in t.system_attrs]
    if others:
        log.warning("study %s has %d trials of another sampler: the grid counts the points they ran, and runs the "
                    "%d of its %d points not run yet (a grid of its own: hydra.sweeper.study_name=NEW_NAME)",
                    study.study_name, len(others), left, size)
    total = min(n_trials, used + left)
    if total < n_trials:  # more would repeat points
        log.warning("the grid has %d points: the sweep runs %d trials, not n_trials=%d", size, total, n_trials)
    return total


def refuse_another_objective(study: optuna.Study, names: list[str], directions: list[str], where: str) -> None:
    """A resumed study keeps the objective its trials were measured by: another direction, other objectives or
    another metric would rank old and new values together, so it is refused (one line), never ignored."""
    had = [d.name.lower() for d in study.directions]
    had_names = study.user_attrs.get("objectives") or study.metric_names  # neither in a study from elsewhere
    if not (isinstance(had_names, list) and len(had_names) == len(had) and all(isinstance(n, str) for n in had_names)):
        had_names = None  # not the runner's record: the directions alone are known
    if had == list(directions) and (had_names is None or had_names == list(names)):
        return

    def said(ways: list[str], labels) -> str:
        return ", ".join(f"{way} {label}" for way, label in zip(ways, labels or ["its value"] * len(ways), strict=True))
    raise UserError(f"study {study.study_name} in {where} optimizes {said(had, had_names)}, and this command asks "
                    f"{said(directions, names)}: a study keeps the objective its trials were measured by. Fix: "
                    f"hydra.sweeper.study_name=NEW_NAME for a new study of this objective, or the study's own "
                    f"(hydra.sweeper.direction, hydra.sweeper.objectives, evaluate.metric) to resume it")


def recorded_repeats(study: optuna.Study) -> int | None:
    """The seeds per trial a study was run with (hydra.sweeper.repeats): its record, else what its finished
    trials show (a study from before the record: n seeds each, or one run); None for a study of no trials."""
    count = study.user_attrs.get("repeats")
    if isinstance(count, int) and not isinstance(count, bool):
        return count
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    counts = [t.user_attrs["n"] for t in finished if isinstance(t.user_attrs.get("n"), int)]
    return max(counts) if counts else (1 if finished else None)


def keep_repeats(study: optuna.Study, count: int, where: str) -> None:
    """A resumed study keeps its seeds per trial: a mean of N seeds ranked beside single runs (or means of
    another number of seeds) is refused in one line; a new study records its own."""
    had = recorded_repeats(study)
    if had is not None and had != count:
        raise UserError(f"study {study.study_name} in {where} runs each trial with hydra.sweeper.repeats={had} "
                        f"seed{'s' if had > 1 else ''}, and this command asks repeats={count}: its trials' values "
                        "would be ranked with values of another number of seeds. Fix: hydra.sweeper.repeats="
                        f"{had} to resume it, or hydra.sweeper.study_name=NEW_NAME for a study of repeats={count}")
    if study.user_attrs.get("repeats") != count:
        study.set_user_attr("repeats", count)
