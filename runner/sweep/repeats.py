"""python -m runner -m +experiment=smoke +search=smoke hydra.sweeper.repeats=3

Noise-aware sweeps: each point of the search is trained with `repeats` seeds (trainer.seed, trainer.seed+1,
...) as ONE Optuna trial of that many runs. Its objective is their mean; its user attributes hold each seed's
value, the standard deviation, n and the 95% t-interval of the mean (runner/evaluation/groups.py: the runs
table's own statistics). The runs sit in the trial's folder, one per seed (trial_0003/seed_0, ...), and
differ only in the seed, so `python -m runner.runs DIR group_by=auto` shows each trial as a seed group.
A trial is COMPLETE when every one of its runs is: one failed run fails the trial (a mean over the seeds
that survived would favour the lucky ones). Pruning is off: a pruner compares one learning curve per trial.
Coarse to fine takes the noise into account: a trial whose interval overlaps the best one's cannot be told
from it, so the next ranges span it too (indistinguishable()).
"""

from __future__ import annotations

import math

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from runner.common.errors import UserError
from runner.evaluation.groups import mean_interval

SEED = "trainer.seed"


def refuse(count, search: dict[str, BaseDistribution], objectives: list[str]) -> None:
    """One line on a repeats setting the sweep cannot keep."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UserError(f"hydra.sweeper.repeats={count} is not a number of seeds. Fix: 1 (each point once) or "
                        "more, e.g. hydra.sweeper.repeats=3")
    if count == 1:
        return
    if SEED in search:
        raise UserError(f"hydra.sweeper.repeats={count} sets {SEED} itself, and the search space sweeps it. Fix: "
                        f"drop {SEED} from the search, or hydra.sweeper.repeats=1")
    if len(objectives) > 1:
        raise UserError(f"hydra.sweeper.repeats={count} averages one objective, and hydra.sweeper.objectives="
                        f"{list(objectives)}. Fix: one objective, or hydra.sweeper.repeats=1")


def jobs(run_dir: str, base_seed: int, count: int) -> list[tuple[str, list[str]]]:
    """(run folder in the sweep folder, the overrides of its seed) for each run of a trial."""
    if count == 1:
        return [(run_dir, [])]
    return [(f"{run_dir}/seed_{seed}", [f"{SEED}={seed}"]) for seed in range(base_seed, base_seed + count)]


def without_seed(fixed: list[str]) -> list[str]:
    """The fixed overrides without trainer.seed: each run of a trial gets its own (the first is the fixed one)."""
    return [o for o in fixed if o.split("=", 1)[0].lstrip("+~") != SEED]


def failure(jobs_done: list, seeds: list[int]) -> str | None:
    """Why a trial of several runs failed (the first run that did not give a finite objective), or None."""
    from hydra.core.utils import JobStatus

    for seed, job in zip(seeds, jobs_done, strict=True):
        if job.status != JobStatus.COMPLETED:
            error = job._return_value
            return f"the run of seed {seed} failed ({type(error).__name__}: {error})"
        value = job.return_value
        if not (isinstance(value, (int, float)) and math.isfinite(value)):
            return f"the run of seed {seed} gave {value!r} (not a finite number; evaluate.after_training=false?)"
    return None


def record(study: optuna.Study, trial, seeds: list[int], values: list[float]) -> float:
    """Keep each seed's value and the spread as the trial's user attributes; returns the objective, their mean."""
    stats = mean_interval(list(values))
    attrs = {"seed_values": {str(seed): value for seed, value in zip(seeds, values, strict=True)},
             "std": stats["std"], "n": stats["n"], "ci95": stats["ci95"]}
    for key, value in attrs.items():
        study._storage.set_trial_user_attr(trial._trial_id, key, value)
    return stats["mean"]


def half_width(trial: FrozenTrial) -> float:
    """Half the 95% interval of a trial's mean; 0 for a trial of one run (its spread unknown)."""
    interval = trial.user_attrs.get("ci95")
    return (interval[1] - interval[0]) / 2 if isinstance(interval, list) and len(interval) == 2 else 0.0


def indistinguishable(ranked: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials (best first) whose 95% interval overlaps the best trial's: within the noise, as good."""
    if not ranked or not any(t.user_attrs.get("n", 1) > 1 for t in ranked):
        return []
    best = ranked[0]
    return [t for t in ranked[1:] if abs(t.value - best.value) <= half_width(best) + half_width(t)]


def note(best: FrozenTrial, tied: list[FrozenTrial]) -> str:
    """What coarse to fine says when the best trial cannot be told from others."""
    others = ", ".join(f"{t.number} ({t.value:.2g} +- {half_width(t):.2g})" for t in tied)
    return (f"the best trial ({best.number}: {best.value:.2g} +- {half_width(best):.2g}, n={best.user_attrs.get('n')}) "
            f"cannot be told from trial{'s' if len(tied) > 1 else ''} {others} within their 95% intervals: the next "
            "ranges span them too, not the best alone")
