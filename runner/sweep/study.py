"""The Optuna study behind a sweep: storage, sampler and pruner by name, the trial budget, lost trials.

Used by the `runner_optuna` Hydra sweeper (hydra_plugins/runner_sweeper) and by each trial's
training job (runner/sweep/trial_link.py), which talk only through the study's storage
(runner/common/study_storage.py).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import re
import socket
import threading
import time
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from runner.common.errors import UserError
from runner.common.io import exclusive
from runner.common.study_storage import HEARTBEAT, storage_for
from runner.sweep.objectives import values_of

log = logging.getLogger("runner.sweep")


class TrialSeededRandomSampler(optuna.samplers.RandomSampler):
    """Random search whose draws are a function of (seed, trial number, parameter) only.

    The same seed gives the same parameters for trial N whichever worker runs it, and no two
    trials (or workers) share a random stream.
    """

    def __init__(self, seed: int):  # no other options: the stream is (seed, trial, parameter)
        super().__init__(seed=seed)
        self._base_seed = seed

    def sample_independent(self, study, trial, param_name: str, param_distribution: BaseDistribution):
        seed = zlib.crc32(repr((self._base_seed, trial.number, param_name)).encode())
        return optuna.samplers.RandomSampler(seed=seed).sample_independent(study, trial, param_name, param_distribution)


class AskTellGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid, without its study.stop() after the last point (which raises outside study.optimize):
    the sweeper's budget, n_trials capped at the points not yet run, ends the sweep. A point counts as run
    by any trial of the study at it, also one of another sampler (a study resumed with sampler=grid):
    Optuna's own grid knows only its own trials, and ran one point twice and skipped another."""

    def after_trial(self, study, trial, state, values) -> None:
        pass

    def before_trial(self, study, trial) -> None:
        if "grid_id" in trial.system_attrs or "fixed_params" in trial.system_attrs:  # queued: its point is given
            return
        left = self.points_left(study, queued_too=True) or self.points_left(study) or list(range(len(self._all_grids)))
        grid_id = int(self._rng.rng.choice(left))  # at random: workers on other nodes seldom pick the same one
        study._storage.set_trial_system_attr(trial._trial_id, "search_space", self._search_space)
        study._storage.set_trial_system_attr(trial._trial_id, "grid_id", grid_id)

    def points_left(self, study, queued_too: bool = False) -> list[int]:
        """The grid's points (their ids) that no trial has run or runs (nor waits to run, if queued_too)."""
        run = set()
        for trial in study._storage.get_all_trials(study._study_id, deepcopy=False):
            if not ran_or_runs(trial) and not (queued_too and trial.state == TrialState.WAITING):
                continue
            attrs = trial.system_attrs
            if "grid_id" in attrs and self._same_search_space(attrs.get("search_space", {})):
                run.add(attrs["grid_id"])
                continue
            given = {**(attrs.get("fixed_params") if isinstance(attrs.get("fixed_params"), dict) else {}),
                     **trial.params}
            with contextlib.suppress(KeyError, TypeError):  # a point off the grid (or of unhashable values)
                run.add(self._ids[tuple(given[name] for name in self._param_names)])
        return [i for i in range(len(self._all_grids)) if i not in run]

    @functools.cached_property
    def _ids(self) -> dict[tuple, int]:
        return {tuple(grid): i for i, grid in enumerate(self._all_grids)}


def ran_or_runs(trial: FrozenTrial) -> bool:
    """Has the trial's point been tried (or is it being tried, or known from a warm start's sweep)? Not so
    for a queued trial, one refused before it ran, or a lost one whose retry runs it again."""
    attrs = trial.system_attrs
    return trial.state != TrialState.WAITING and not attrs.get("runner:retried", False) and not attrs.get(REFUSED)


def make_sampler(name: str, seed: int, worker: str, options: dict, space: dict[str, BaseDistribution]
                 ) -> optuna.samplers.BaseSampler:
    """A sampler by name with hydra.sweeper.sampler_options as its keyword arguments.

    random draws by (seed, trial, parameter), the same in any worker; qmc follows one Sobol sequence
    (the seed's) in every worker. tpe, cmaes and nsgaii get a stream of their own per worker (and
    restart), or workers started together draw the same points; tpe's constant_liar counts the
    trials other workers are running as bad, so they are not proposed again. grid tries every point
    of a space of choices and stepped ranges once.
    """
    own = zlib.crc32(repr((seed, worker)).encode())
    samplers = {
        "random": lambda: TrialSeededRandomSampler(seed, **options),
        "tpe": lambda: optuna.samplers.TPESampler(
            **{"seed": own, "n_startup_trials": 10, "multivariate": True, "constant_liar": True,
               "group": bool(getattr(space, "when", None)), **options}),  # group: a conditional space's branches
        "qmc": lambda: optuna.samplers.QMCSampler(**{"qmc_type": "sobol", "scramble": True, "seed": seed, **options}),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(**{"seed": own, "warn_independent_sampling": False, **options}),
        "nsgaii": lambda: optuna.samplers.NSGAIISampler(**{"seed": own, **options}),
        "grid": lambda: AskTellGridSampler(grid_points(space), **{"seed": seed, **options}),
    }
    if name not in samplers:
        raise UserError(f"hydra.sweeper.sampler={name!r} is not known. Fix: one of {', '.join(samplers)}")
    choices = [key for key, d in space.items() if isinstance(d, CategoricalDistribution)]
    if name == "cmaes" and choices:  # said once, not at every trial as Optuna would
        log.warning("sampler=cmaes searches numbers only: %s drawn at random", ", ".join(choices))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return samplers[name]()
    except TypeError as error:
        raise UserError(f"hydra.sweeper.sampler_options={dict(options)} do not fit sampler {name} ({error}). "
                        f"Fix: the keyword arguments of optuna.samplers' {name} sampler") from None


def grid_points(space: dict[str, BaseDistribution]) -> dict[str, list]:
    """Every value of each parameter, for sampler=grid: choices and stepped ranges have finitely many."""
    points = {}
    for key, distribution in space.items():
        if isinstance(distribution, CategoricalDistribution):
            points[key] = list(distribution.choices)
        elif isinstance(distribution, IntDistribution) and not distribution.log:
            points[key] = list(range(distribution.low, distribution.high + 1, distribution.step))
        elif isinstance(distribution, FloatDistribution) and distribution.step is not None:
            count = round((distribution.high - distribution.low) / distribution.step) + 1
            points[key] = [round(distribution.low + i * distribution.step, 12) for i in range(count)]
        else:
            raise UserError(f"hydra.sweeper.sampler=grid needs values to try, and {key} is a continuous range. "
                            f"Fix: {key}=choice(...) or range(start, stop, step), or another sampler")
    return points


def grid_size(space: dict[str, BaseDistribution]) -> int:
    return math.prod(len(values) for values in grid_points(space).values())


def open_study(name: str, storage_url: str, directions: list[str], sampler: optuna.samplers.BaseSampler,
               pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """The sweep's study: created by the first worker, loaded by every other one and by a rerun."""
    return optuna.create_study(study_name=name, storage=storage_for(storage_url), directions=directions,
                               sampler=sampler, pruner=pruner, load_if_exists=True)


def this_worker() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a run folder: a plain name inside the sweep directory
REFUSED = "runner:refused"  # trial system attr: a queued trial that did not fit the search, FAIL without a run
COPIED = "runner:copied_from"  # trial system attr: a warm start's known point and value, not trained here


def counted(trial: FrozenTrial) -> bool:
    """Does the trial use up one of n_trials? A failed trial that was retried does not (its retry
    does), nor a WAITING one (enqueued): it counts once a worker starts it; nor a queued trial
    refused before it ran (runner/sweep/queued.py), nor a warm start's copy of a known point."""
    return ran_or_runs(trial) and not trial.system_attrs.get(COPIED)


def budget_used(study: optuna.Study) -> int:
    return sum(counted(t) for t in study.get_trials(deepcopy=False))


def fail_lost_trials(study: optuna.Study, grace_seconds: float, max_retries: int, sweep_dir: Path | None,
                     objectives: list[str]) -> list[int]:
    """RUNNING trials without a heartbeat for grace_seconds (a killed worker): FAIL, and retry them.

    A retry is a new trial with the same parameters, queued for the next ask; it continues in
    the lost trial's run directory, so it resumes from the checkpoints that trial wrote. A run
    that had finished (its worker died before telling the study) is recorded with its value.
    """
    now = time.time()
    lost = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        last = trial.system_attrs.get(HEARTBEAT, started)
        last = last if type(last) in (int, float) else started  # a trial from outside may carry anything
        if now - last < grace_seconds:
            continue
        folder = run_folder(trial.system_attrs)
        run_dir = None if sweep_dir is None or folder is None else sweep_dir / folder
        values = None if run_dir is None else values_of(run_dir, objectives)
        if values is not None:
            with contextlib.suppress(RuntimeError, optuna.exceptions.UpdateFinishedTrialError):  # told meanwhile
                study.tell(trial.number, values)
                log.warning("trial %d: its worker was lost after the run finished: recorded %s from its folder",
                            trial.number, values)
            continue
        retries = trial.system_attrs.get("runner:retries", 0)
        retries = retries if type(retries) is int and retries >= 0 else max_retries  # not a count: no more
        if retry_later(study, trial, f"worker lost: no heartbeat for {now - last:.0f} s",
                       retries < max_retries, retries):
            lost.append(trial.number)
    return lost


def run_folder(attrs: dict) -> str | None:
    """The trial's run folder in the sweep directory (runner:run_dir), or None where it names none (a
    trial from outside the sweeper may carry a path elsewhere, or anything)."""
    name = attrs.get("runner:run_dir")
    return name if isinstance(name, str) and FOLDER_NAME.fullmatch(name) else None


@contextlib.contextmanager
def hold(study: optuna.Study, trials: list, seconds: float) -> Iterator[None]:
    """Heartbeat every trial this worker holds, the ones still queued behind a running one too, so
    that no other worker takes a live worker's trial for lost (each run beats for itself as well)."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            for trial in trials:
                with contextlib.suppress(RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
                    study._storage.set_trial_system_attr(trial._trial_id, HEARTBEAT, time.time())
            if stop.wait(seconds):
                return
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def tell_unless_ended(study: optuna.Study, trial, *args, **kwargs) -> bool:
    """study.tell, unless another worker has ended the trial meanwhile (then a warning, not a crash)."""
    state = study._storage.get_trial(trial._trial_id).state
    if state == TrialState.RUNNING:
        try:
            study.tell(trial, *args, **kwargs)
            return True
        except (RuntimeError, ValueError, optuna.exceptions.UpdateFinishedTrialError) as error:
            state = f"{state.name}, then {error}"
    log.warning("trial %d was ended by another worker (%s): this worker's result is not recorded", trial.number,
                state.name if isinstance(state, TrialState) else state)
    return False


def note(study: optuna.Study, trial_id: int, key: str, value) -> None:
    """A fact of a trial as the sweeper reads it (system attr `runner:KEY`) and as optuna-dashboard
    shows it (user attr KEY): fail_reason, run_dir."""
    study._storage.set_trial_system_attr(trial_id, f"runner:{key}", value)
    study._storage.set_trial_user_attr(trial_id, key, value)


def retry_later(study: optuna.Study, trial, reason: str, retry: bool = True, retries: int = 0) -> bool:
    """FAIL the trial with its reason and, if `retry`, queue its parameters again (same run folder).

    False when another worker finished the trial first.
    """
    storage = study._storage
    attrs = storage.get_trial_system_attrs(trial._trial_id)
    try:  # attributes first: a finished trial can no longer be changed
        note(study, trial._trial_id, "fail_reason", reason)
        storage.set_trial_system_attr(trial._trial_id, "runner:retried", retry)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
        return False
    if retry:
        study.enqueue_trial(storage.get_trial_params(trial._trial_id), user_attrs={"retry_of": trial.number},
                            skip_if_exists=False)
        pending = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))[-1]
        storage.set_trial_system_attr(pending._trial_id, "runner:retries", retries + 1)
        note(study, pending._trial_id, "run_dir", run_folder(attrs))
        log.warning("trial %d (%s): queued again with the same parameters", trial.number, reason)
    else:
        log.warning("trial %d (%s) has used its retries: left as FAIL", trial.number, reason)
    return True


def sweep_lock(sweep_dir: Path):
    """One worker at a time counts the budget and asks for trials (workers on one filesystem)."""
    return exclusive(sweep_dir / ".ask.lock")
