"""Trials a worker did not create itself, checked before they run.

A WAITING trial comes from study.enqueue_trial (Optuna's own way to try given points: the sweep's
hydra.sweeper.enqueue and warm start, a script, or anyone with the storage), from a lost trial's
retry, or from any script that adds one. Each is run only when its parameters are values of the
search space (a parameter it leaves out is drawn, as Optuna documents; numbers take the type of
their parameter) and the runner's attributes it carries are a retry's: a count of retries, and the
folder of a lost trial it continues. Any other is FAIL with its reason, in one warning naming it,
uses none of n_trials, and the worker asks again: never a crash, never a trial left RUNNING.
"""

from __future__ import annotations

import contextlib
import logging

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from runner.common.errors import UserError
from runner.sweep.conditions import check_point, is_active
from runner.sweep.space import canonical
from runner.sweep.study import REFUSED, note, run_folder

log = logging.getLogger("runner.sweep")

RETRY_ATTRS = ("runner:retries", "runner:run_dir")  # what study.retry_later gives the trial it queues


def ask(study: optuna.Study, search: dict[str, BaseDistribution]) -> optuna.Trial:
    """study.ask(search), except that a WAITING trial which does not fit is FAIL (with a warning) and
    skipped. A new trial the sampler cannot draw stops the sweep (UserError), also left FAIL."""
    while True:
        waiting = {t._trial_id for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))}
        trial = study.ask()  # the first WAITING trial, now RUNNING, or a new one
        frozen = study._storage.get_trial(trial._trial_id)
        problem = problem_of(study, frozen, search)
        if problem is None:
            try:
                return suggested(study, trial, frozen, search)
            except Exception as error:  # noqa: BLE001 (anything Optuna says of a trial from outside: FAIL, not a crash)
                problem = f"the sampler cannot draw its parameters ({type(error).__name__}: {error})"
                if trial._trial_id not in waiting:  # the sweep's own trial: the sampler's settings are at fault
                    refuse(study, frozen, problem)
                    raise UserError(f"trial {frozen.number}: {problem}. Fix: check hydra.sweeper.sampler and "
                                    "hydra.sweeper.sampler_options") from None
        refuse(study, frozen, problem)


def suggested(study: optuna.Study, trial: optuna.Trial, frozen: FrozenTrial,
              search: dict[str, BaseDistribution]) -> optuna.Trial:
    """The trial with every parameter of the search: its given ones as the parameters hold them, the others drawn."""
    given = frozen.system_attrs.get("fixed_params")
    if given:
        fixed = {key: canonical(key, value, search[key]) for key, value in given.items()}
        study._storage.set_trial_system_attr(trial._trial_id, "fixed_params", fixed)
        trial = optuna.Trial(study, trial._trial_id)  # reads them again
    drawn = {}
    for name, distribution in search.items():  # parents first: define-by-run, a conditional one only when it holds
        if is_active(name, drawn, search):
            drawn[name] = trial._suggest(name, distribution)  # what study.ask(search) does
    return trial


def problem_of(study: optuna.Study, trial: FrozenTrial, search: dict[str, BaseDistribution]) -> str | None:
    """Why a trial (new, or queued from anywhere) cannot run in this search, or None."""
    attrs = trial.system_attrs
    given = attrs.get("fixed_params", {})
    if not isinstance(given, dict) or not all(isinstance(key, str) for key in given):
        return f"its fixed_params {shorten(given)} are not a mapping of parameter names to values"
    why = check_point(given, search, naming="its parameter ")
    if why is not None:
        return why
    for key, value in attrs.items():
        if key.startswith("runner:") and key not in RETRY_ATTRS:
            return f"it carries {key}={shorten(value)}, which the runner sets only on a trial it has run"
    retries = attrs.get("runner:retries", 0)
    if type(retries) is not int or retries < 0:
        return f"its runner:retries={shorten(retries)} is not a count of retries"
    return folder_problem(study, trial, attrs.get("runner:run_dir"))


def folder_problem(study: optuna.Study, trial: FrozenTrial, run_dir) -> str | None:
    """A queued trial may name a run folder only as a retry: the folder of a lost trial, which it continues."""
    if run_dir is None:
        return None
    if run_folder(trial.system_attrs) is None:
        return f"its runner:run_dir={shorten(run_dir)} is not the name of a folder in the sweep directory"
    holders = [t for t in study.get_trials(deepcopy=False)
               if t.number != trial.number and t.system_attrs.get("runner:run_dir") == run_dir]
    if not holders:
        return f"its runner:run_dir={run_dir} is no lost trial's folder: only a retry continues a folder"
    busy = [t for t in holders if not (t.state == TrialState.FAIL and t.system_attrs.get("runner:retried"))]
    if busy:
        return (f"its runner:run_dir={run_dir} is the folder of trial {busy[0].number} ({busy[0].state.name}): "
                "only a retry of a lost trial continues its folder")
    return None


def refuse(study: optuna.Study, trial: FrozenTrial, problem: str) -> None:
    """FAIL the trial with its reason, uncounted (it never ran), and say so once."""
    with contextlib.suppress(RuntimeError, optuna.exceptions.UpdateFinishedTrialError):  # ended elsewhere
        note(study, trial._trial_id, "fail_reason", problem)
        study._storage.set_trial_system_attr(trial._trial_id, REFUSED, True)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    log.warning("trial %d, queued from outside this sweep, is not run (left as FAIL, using none of n_trials): %s. "
                "Fix: queue points of the search space (hydra.sweeper.enqueue checks them)", trial.number, problem)


def shorten(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
