"""python -m runner -m hydra/sweeper=runner_optuna 'optimizer.lr=tag(log, interval(1e-4, 1e-1))' hydra.sweeper.n_trials=20

A random-search (or TPE) sweeper on Optuna: each trial is a normal run launched through Hydra's
launcher, its objective the offline evaluator's best validation metric. The study lives in
storage (a journal file in the sweep directory by default), so the same command resumes it,
several copies of the command work on it together, and a trial's job can report to it for
pruning. Failed, NaN and pruned trials are recorded and the sweep goes on. Before the first trial
the search space's ends are validated and the data is built once (runner/sweep/data_check.py).
hydra.sweeper.when makes a parameter conditional (runner/sweep/conditions.py); hydra.sweeper.repeats=N
trains each point with N seeds as one trial, its objective their mean (runner/sweep/repeats.py).
"""

import contextlib
import hashlib
import logging
import math
import shlex
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional  # noqa: UP035 (OmegaConf reads these annotations at run time)

import optuna
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from optuna.trial import TrialState

from runner.common import stop_signals, study_storage
from runner.common.errors import UserError, one_line
from runner.common.stop_signals import Preempted
from runner.sweep import (
    conditions,
    data_check,
    objectives,
    queued,
    repeats,
    results,
    resume_rules,
    space,
    study,
    warm_start,
    workers,
)

log = logging.getLogger("runner.sweep")
EXIT_STOPPED, EXIT_INTERRUPTED = 75, 130  # as python -m runner (runner/__main__.py): run the same command to go on


@dataclass
class RunnerOptunaSweeperConf:
    _target_: str = "hydra_plugins.runner_sweeper.runner_sweeper.RunnerOptunaSweeper"
    n_trials: int = 20  # in total, over every run of the command and every worker
    n_jobs: int = 1  # trials handed to Hydra's launcher at a time
    sampler: str = "random"  # random | tpe | qmc | cmaes | grid | nsgaii
    sampler_options: Dict[str, Any] = field(default_factory=dict)  # noqa: UP006  # its keyword arguments
    seed: int = 0
    direction: str = "auto"  # maximize | minimize | auto (from evaluate.metric)
    objectives: List[str] = field(default_factory=list)  # noqa: UP006  # e.g. [top1, parameters]: a Pareto front
    storage: Optional[str] = None  # noqa: UP045  # default: a journal file in the sweep directory; or postgresql://...
    study_name: Optional[str] = None  # noqa: UP045  # default: the experiment name and a hash of the search
    sweep_dir: Optional[str] = None  # noqa: UP045  # default: outputs/<name>/sweeps/<study_name>
    pruner: str = "none"  # none | median | percentile | hyperband | successive_halving
    pruner_options: Dict[str, Any] = field(default_factory=dict)  # noqa: UP006  # e.g. {n_warmup_steps: 2}
    max_failure_rate: float = 0.5  # stop when more than this fraction of n_trials has failed
    max_retries: int = 1  # retries of a trial whose worker was lost
    heartbeat_seconds: float = 10.0
    grace_seconds: float = 120.0  # a RUNNING trial silent this long has lost its worker
    enqueue: List[Dict[str, Any]] = field(default_factory=list)  # noqa: UP006  # points to run first, once
    warm_start: Optional[str] = None  # noqa: UP045  # an earlier sweep's folder (or study name): its best run first
    warm_start_top: int = 3
    params: Dict[str, str] = field(default_factory=dict)  # noqa: UP006  # the search space, as in conf/search/*.yaml
    # {optimizer.momentum: {optimizer: sgd}}: drawn only then (None, not {}: Hydra sets a dict, not merges into one)
    when: Any = None
    repeats: int = 1  # seeds per point (trainer.seed, +1, ...): one trial of that many runs, its objective their mean
    check_data: bool = True  # build the data once before the first trial (false: trials see other files than here)


ConfigStore.instance().store(group="hydra/sweeper", name="runner_optuna", node=RunnerOptunaSweeperConf,
                             provider="runner")


class RunnerOptunaSweeper(Sweeper):
    def __init__(self, **settings: Any):
        self.settings = OmegaConf.create(settings)
        self.launcher = None
        self.config: Optional[DictConfig] = None  # noqa: UP045
        self.job_index = 0
        self.n_trials = 0  # the budget: n_trials, or a grid's size when smaller
        self.objectives: list[str] = []  # what the study optimizes (runner/sweep/objectives.py)
        self.stopped: Optional[str] = None  # noqa: UP045  # the stop signal that ended this worker's trials
        self.requeued = False  # a trial's own job requeued the SLURM job already
        self.worker: Optional[workers.Entry] = None  # noqa: UP045  # this worker in the sweep folder's registry
        self.share = 0  # trial processes sharing this machine's cores, as last said
        self.pruner = "none"  # hydra.sweeper.pruner, or none with repeats
        self.config_loader = None  # Hydra's, from setup

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.config_loader = hydra_context.config_loader
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        try:
            self.run_sweep(arguments)
        except UserError as error:  # a bad search space, or too many failures: one line
            log.error("%s", one_line(error))
            sys.exit(2)
        self.exit_if_stopped()

    def signalled(self) -> bool:
        """The worker's safe point between trials (before asking for one, after one returns): a stop signal
        received so far in the process (caught from its first line, runner/common/stop_signals.py) ends its trials."""
        self.stopped = self.stopped or stop_signals.received()
        return self.stopped is not None

    def exit_if_stopped(self) -> None:
        """After a stop signal, with the reports written and no trial RUNNING: requeue the SLURM job (exit 0),
        else exit 75 (130 for Ctrl-C, the user's stop: never requeued) in one line."""
        if self.stopped is None:
            return
        by = "Ctrl-C" if self.stopped == "SIGINT" else self.stopped
        if self.stopped != "SIGINT" and (self.requeued or stop_signals.requeue_slurm_job()):
            log.warning("stopped by %s between trials, no trial left running: the SLURM job is requeued and goes "
                        "on with the sweep", by)
            sys.exit(0)
        log.warning("stopped by %s between trials, no trial left running (an unfinished one is queued again): "
                    "run the same command to go on", by)
        sys.exit(EXIT_INTERRUPTED if self.stopped == "SIGINT" else EXIT_STOPPED)

    def run_sweep(self, arguments: list[str]) -> None:
        s = self.settings
        study_storage.refuse_passwords([*(f"hydra.sweeper.{key}={value}" for key, value in s.items()
                                          if isinstance(value, str)), *arguments])  # before anything is written
        fixed, search = space.parse(arguments, dict(s.params or {}))
        search = conditions.conditional(search, (OmegaConf.to_container(s.when) if OmegaConf.is_config(s.when)
                                                   else s.when or {}))
        if s.sampler == "grid" and conditions.when_of(search):  # a grid of every combination: no undrawn parameter
            raise UserError("hydra.sweeper.sampler=grid does not take conditions (hydra.sweeper.when). Fix: "
                            "sampler=random or tpe, or one grid sweep per value of the condition's parameter")
        repeats.refuse(s.repeats, search, list(s.objectives))
        if not search:
            raise UserError("the sweep has no search space. Fix: add e.g. 'optimizer.lr=tag(log, interval(1e-4, 1e-1))' "
                            "or +search=NAME")
        name = s.study_name or default_study_name(self.config.name, fixed, search)
        sweep_dir = Path(s.sweep_dir or Path("outputs") / self.config.name / "sweeps" / name)
        # registered first: workers started together count each other before their first trials
        with workers.registered(sweep_dir, self.trial_processes(), s.heartbeat_seconds) as self.worker:
            self.run_worker(fixed, search, name, sweep_dir)

    def trial_processes(self) -> int:
        """Trials this worker runs at once: Hydra's basic launcher runs them in this process, one after another;
        the others (joblib, submitit) run n_jobs processes side by side."""
        return 1 if type(self.launcher).__name__ == "BasicLauncher" else max(1, self.settings.n_jobs) * self.settings.repeats

    def run_worker(self, fixed: list[str], search: dict, name: str, sweep_dir: Path) -> None:
        s = self.settings
        ends = self.refuse_settings_out_of_reach(fixed, search)  # before any trial: not a sweep of failures
        if s.check_data:  # the same: a missing dataset stops the sweep here, not after max_failure_rate of trials
            data_check.check(self.composed(fixed)[0], ends)
        storage_url = study_storage.setting(s.storage) or str(sweep_dir / "study.journal")
        shown = study_storage.redacted(storage_url)  # printed, logged: never the password
        evaluation = self.config.evaluate  # by default the objective is the evaluator's best validation metric
        self.objectives, directions = objectives.parse(list(s.objectives), evaluation.metric, evaluation.direction,
                                                       s.direction)
        if len(self.objectives) > 1 and s.pruner != "none":  # Optuna's pruners compare one value per step
            raise UserError(f"pruning needs a single objective, and hydra.sweeper.objectives={self.objectives}. "
                            "Fix: hydra.sweeper.pruner=none, or one objective")
        seed = warm_start.seed_for(s.seed, s.warm_start, storage_url) if s.warm_start else s.seed
        sampler = study.make_sampler(s.sampler, seed, study.this_worker(), dict(s.sampler_options), search)
        self.pruner = s.pruner
        if s.repeats > 1 and s.pruner != "none":
            log.warning("hydra.sweeper.repeats=%d: pruning is off (hydra.sweeper.pruner=%s compares one learning curve "
                        "per trial, and each trial here is %d runs of different seeds)", s.repeats, s.pruner, s.repeats)
            self.pruner = "none"
        pruner = study_storage.make_pruner(self.pruner, dict(s.pruner_options))
        the_study = study.open_study(name, storage_url, directions=directions, sampler=sampler, pruner=pruner)
        resume_rules.refuse_another_objective(the_study, self.objectives, directions, shown)
        resume_rules.keep_repeats(the_study, s.repeats, shown)
        describe(the_study, fixed, search, dict(s.pruner_options), self.objectives)
        self.n_trials = s.n_trials
        if s.sampler == "grid":
            self.n_trials = resume_rules.say_grid(the_study, s.n_trials)
        with study.sweep_lock(sweep_dir):  # every worker of the command runs this: the points go in once
            self.enqueue_known_points(the_study, fixed, search, storage_url, directions)
        log.info("study %s in %s: %d of %d trials so far; results in %s", name, shown,
                 study.budget_used(the_study), self.n_trials, sweep_dir)
        log.info("optuna-dashboard %s", f'"${study_storage.ENVIRONMENT}"' if shown != storage_url else storage_url)
        try:
            self.run_trials(the_study, search, fixed, sweep_dir, storage_url)
        finally:  # also on a stop: the files below match the study
            with study.sweep_lock(sweep_dir):  # read and written by one worker at a time: none writes a stale view
                self.report(the_study, sweep_dir, fixed, search)
                self.worker.leave()
                others = self.worker.others(s.grace_seconds)
            if others:  # workers leaving together would each redraw them in turn
                log.info("the plots are left to the last worker out (%d still running here or on a shared "
                         "filesystem)", others)
            else:
                results.write_plots(the_study, sweep_dir, objective=f"val {self.config.evaluate.metric}")
            for folder in (Path(self.config.hydra.sweep.dir), Path(self.config.hydra.sweep.dir).parent):
                with contextlib.suppress(OSError):  # Hydra's own multirun folder, unused by this sweeper
                    folder.rmdir()

    def refuse_settings_out_of_reach(self, fixed: list[str], search: dict) -> dict[str, DictConfig]:
        """The runner's validation at both ends of every range and at every choice; one line on the first refusal.
        Returns the job's config at each of them, by its override."""
        configs = {}
        for key, distribution in search.items():
            for override in space.end_overrides(key, distribution):  # with its condition's overrides, as a trial
                configs[override], problem = self.composed([*fixed, *conditions.needs(key, search), override])
                if problem:
                    cause, _, fix = problem.partition(" Fix: ")
                    raise UserError(f"the search space reaches {override}, which the runner refuses: {cause} "
                                    f"Fix: narrow {key} to values it takes ({fix or 'see above'})")
        return configs

    def enqueue_known_points(self, the_study: optuna.Study, fixed: list[str], search: dict, storage_url: str,
                             directions: list[str]) -> None:
        """hydra.sweeper.enqueue's points (a bad one stops the sweep), then warm_start's best trials that fit
        this search space (their values copied where the config is the same); each one once, whatever the
        number of workers and reruns."""
        s = self.settings
        points = [(dict(point), "hydra.sweeper.enqueue") for point in s.enqueue]
        if s.warm_start:
            origin = f"warm start from {study_storage.redact(s.warm_start)}"
            train, known = warm_start.known_points(s.warm_start, s.warm_start_top, storage_url,
                                                   [study_storage.redact(o) for o in fixed], search,
                                                   (self.objectives, directions), s.repeats)
            warm_start.copy_known_points(the_study, known, search, origin)  # values known: not trained again
            points += [(point, origin) for point in train]
        for point, origin in points:
            overrides = space.as_overrides(point)
            problem = warm_start.check_point(point, search)
            if problem is None:  # each number as its parameter takes it: {trainer.batch_size: 32.0} is 32
                point = {key: space.canonical(key, value, search[key]) for key, value in point.items()}
                overrides = space.as_overrides(point)
                problem = self.refusal([*fixed, *overrides])
            if problem and origin == "hydra.sweeper.enqueue":
                cause, _, fix = problem.partition(" Fix: ")
                raise UserError(f"hydra.sweeper.enqueue has {' '.join(overrides)}: {cause.rstrip('.')}. "
                                f"Fix: a point inside the search space that the runner takes{f' ({fix})' if fix else ''}")
            if problem:
                log.warning("%s: %s is left out (%s)", origin, " ".join(overrides), problem)
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                the_study.enqueue_trial(point, user_attrs={"enqueued": origin}, skip_if_exists=True)

    def refusal(self, overrides: list[str]) -> str | None:
        """What the runner's own validation says of a trial's config with these overrides (one line), or None."""
        return self.composed(overrides)[1]

    def composed(self, overrides: list[str]) -> tuple[DictConfig | None, str | None]:
        """(the job's config with these overrides, None), or (None, what the runner's validation says of it)."""
        from runner.config.precheck import translate
        from runner.config.schema import validate  # here: Hydra imports this plugin at every start

        try:
            config = self.config_loader.load_sweep_config(self.config, overrides)
            with open_dict(config):
                del config["hydra"]  # the job's config, as the trial will see it
            validate(config)
        except UserError as error:
            return None, one_line(error)
        except (HydraException, OmegaConfBaseException) as error:
            return None, translate(error, "train", overrides)
        return config, None

    def run_trials(self, the_study: optuna.Study, search: dict, fixed: list[str], sweep_dir: Path,
                   storage_url: str) -> None:
        """Ask, run and tell, n_jobs at a time, until the study has n_trials (or a stop signal)."""
        s = self.settings
        while True:
            with study.sweep_lock(sweep_dir):
                study.fail_lost_trials(the_study, s.grace_seconds, s.max_retries, sweep_dir, self.objectives)
                room = resume_rules.room(the_study, self.n_trials)
                if room and self.signalled():  # the safe point; with no trial left, a late signal stops nothing
                    return
                trials = [queued.ask(the_study, search) for _ in range(max(0, min(s.n_jobs, room)))]
                storage = the_study._storage
                for trial in trials:  # a retried trial keeps its lost run's directory, to resume there
                    if storage.get_trial_system_attrs(trial._trial_id).get("runner:run_dir") is None:
                        study.note(the_study, trial._trial_id, "run_dir", f"trial_{trial.number:04d}")
            if not trials:
                return
            trials = self.composable(the_study, trials, fixed)
            if trials:
                self.run_batch(the_study, trials, fixed, sweep_dir, storage_url)
            with study.sweep_lock(sweep_dir):  # read and written by one worker at a time: none writes a stale view
                results.write_trials_csv(the_study, sweep_dir)  # after every batch: the file matches the study
            self.check_failures(the_study)

    def composable(self, the_study: optuna.Study, trials: list, fixed: list[str]) -> list:
        """The trials whose config composes and passes the runner's validation; each other one is FAIL with the
        reason (e.g. a parameter its drawn config group lacks: Hydra's "Could not override"), and the sweep goes on."""
        if self.config_loader is None:  # not set up by Hydra (a sweeper built in a test): no config to compose
            return trials
        kept = []
        for trial in trials:
            problem = self.refusal([*fixed, *space.as_overrides(trial.params)])
            if problem is None:
                kept.append(trial)
            else:
                self.fail(the_study, trial, f"its config does not compose: {problem}")
        return kept

    def run_batch(self, the_study: optuna.Study, trials: list, fixed: list[str], sweep_dir: Path, storage_url: str):
        """Launch the trials through Hydra's launcher and tell the study how each ended."""
        s = self.settings
        share = workers.sharing(sweep_dir)
        if share != self.share:  # workers come and go: said when it changes
            self.share = workers.say_share(share, OmegaConf.select(self.config, "trainer.num_threads"))
        batch, seed = [], OmegaConf.select(self.config, "trainer.seed", default=0)
        for trial in trials:
            run_dir = the_study._storage.get_trial_system_attrs(trial._trial_id)["runner:run_dir"]
            for subdir, seed_overrides in repeats.jobs(run_dir, seed, s.repeats):
                batch.append([
                    *(repeats.without_seed(fixed) if seed_overrides else fixed), *space.as_overrides(trial.params),
                    *seed_overrides,
                    *space.as_overrides({"hydra.sweep.dir": str(sweep_dir), "hydra.sweep.subdir": subdir,
                                         "sweep.study": the_study.study_name,
                                         "sweep.storage": study_storage.without_password(storage_url)}),
                    f"sweep.trial={trial.number}", f"sweep.trial_id={trial._trial_id}",
                    f"sweep.pruner={self.pruner}", f"sweep.heartbeat_seconds={s.heartbeat_seconds}",
                    f"++hydra.job.env_set.{workers.SHARERS}={share}",  # its process's share of the cores
                ])
            log.info("trial %d: %s", trial.number, " ".join(space.as_overrides(trial.params)))
        with study.hold(the_study, trials, s.heartbeat_seconds):  # the queued ones too, until each is told
            returns = self.launcher.launch(batch, initial_job_idx=self.job_index)
        self.job_index += len(batch)
        runs, seeds = s.repeats, [seed + k for k in range(s.repeats)]  # each trial's runs: one, or one per seed
        for i, trial in enumerate(trials):
            run_dir = sweep_dir / the_study._storage.get_trial_system_attrs(trial._trial_id)["runner:run_dir"]
            self.tell(the_study, trial, list(returns[i * runs:(i + 1) * runs]), run_dir, seeds)

    def tell(self, the_study: optuna.Study, trial, jobs: list, run_dir: Path, seeds: list[int] = (0,)) -> None:
        """Tell the study how the trial's run (or runs, one per seed with repeats) ended."""
        job = jobs[0]
        stopped = [j._return_value for j in jobs if j.status != JobStatus.COMPLETED]
        if any(isinstance(error, Preempted) for error in stopped):  # this worker is being stopped: hand the trial on
            error = next(error for error in stopped if isinstance(error, Preempted))
            study.retry_later(the_study, trial, f"worker stopped: {error}")
            self.stopped, self.requeued = self.stopped or error.signal_name, self.requeued or error.requeued
            return
        if len(jobs) > 1:
            reason = repeats.failure(jobs, seeds)
            if reason is None:
                value = repeats.record(the_study, trial, seeds, [j.return_value for j in jobs])
                if study.tell_unless_ended(the_study, trial, value):
                    log.info("trial %d: %s = %.4f (the mean of %d seeds)", trial.number, self.config.evaluate.metric,
                             value, len(jobs))
                return
        elif job.status == JobStatus.COMPLETED:
            value = job.return_value
            if len(self.objectives) > 1:  # the others are not returned: read them all from the run's folder
                value = objectives.values_of(run_dir, self.objectives)
                if value is not None:
                    if study.tell_unless_ended(the_study, trial, value):
                        log.info("trial %d: %s = %s", trial.number, self.objectives, value)
                    return
            elif isinstance(value, (int, float)) and math.isfinite(value):
                if study.tell_unless_ended(the_study, trial, value):
                    log.info("trial %d: %s = %.4f", trial.number, self.config.evaluate.metric, value)
                return
            reason = f"objective is {value!r} (not a finite number; evaluate.after_training=false?)"
        else:
            error = job._return_value
            if isinstance(error, optuna.TrialPruned):
                if study.tell_unless_ended(the_study, trial, state=TrialState.PRUNED):
                    log.info("trial %d: PRUNED (%s)", trial.number, error)
                return
            reason = f"{type(error).__name__}: {error}"
        self.fail(the_study, trial, reason)

    @staticmethod
    def fail(the_study: optuna.Study, trial, reason: str) -> None:
        """Tell the study the trial failed, its reason kept (trials.csv, optuna-dashboard)."""
        with contextlib.suppress(RuntimeError, optuna.exceptions.UpdateFinishedTrialError):  # ended elsewhere
            study.note(the_study, trial._trial_id, "fail_reason", reason[:1000])
        if study.tell_unless_ended(the_study, trial, state=TrialState.FAIL):
            log.warning("trial %d: FAIL (%s)", trial.number, reason)

    def check_failures(self, the_study: optuna.Study) -> None:
        failed = sum(t.state == TrialState.FAIL and study.counted(t) for t in the_study.get_trials(deepcopy=False))
        if failed > self.settings.max_failure_rate * self.n_trials:
            raise UserError(f"{failed} trials failed, more than max_failure_rate={self.settings.max_failure_rate} of "
                            f"n_trials={self.n_trials}: the sweep stops. Fix: see the reasons in trials.csv")

    def report(self, the_study: optuna.Study, sweep_dir: Path, fixed: list[str], search: dict) -> None:
        results.write_trials_csv(the_study, sweep_dir)
        best = results.write_best(the_study, sweep_dir, fixed, search, refused=lambda *o: self.refusal([*fixed, *o]))
        if best is None:
            log.warning("no trial completed: nothing to report (see %s)", sweep_dir / "trials.csv")
            return
        print(f"\nsweep {the_study.study_name}: {best['trials']}")
        if "pareto_front" in best:
            print(f"Pareto front ({', '.join(f'{k} {v}' for k, v in best['objectives'].items())}):")
            for entry in best["pareto_front"]:
                values = ", ".join(f"{k} {v:.4g}" for k, v in entry["values"].items())
                print(f"  trial {entry['trial']}: {values}  "
                      f"({results.place(sweep_dir, entry['run_dir'], entry['run_host'], entry.get('copied_from'))})")
        else:
            where = results.place(sweep_dir, best["best_run_dir"], best["best_run_host"], best.get("best_copied_from"))
            print(f"best value {best['best_value']:.4f} (trial {best['best_trial']}, {where})")
            print(f"reproduce:  {best['reproduce']}")
        print("coarse to fine, next sweep: " + " ".join([*best["coarse_to_fine"]["overrides"],
                                                         shlex.quote(f"hydra.sweeper.warm_start={sweep_dir}")]))
        if "noise" in best["coarse_to_fine"]:  # hydra.sweeper.repeats: the best is not alone within the noise
            print(f"coarse to fine: {best['coarse_to_fine']['noise']}")
        for line in best["coarse_to_fine"]["left_out"]:
            log.warning("coarse to fine left out %s", line)
        print(f"results:    {sweep_dir}")


def describe(the_study: optuna.Study, fixed: list[str], search: dict, pruner_options: dict, names: list[str]) -> None:
    """What the sweep searches, keeps fixed and was started with, where optuna-dashboard shows it;
    and the pruner's options, which each trial's job reads to build the same pruner."""
    the_study.set_user_attr("pruner_options", pruner_options)
    the_study.set_user_attr("objectives", names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        the_study.set_metric_names(names)  # the dashboard's labels of the values
    the_study.set_user_attr("search_space", {key: repr(value) for key, value in search.items()})
    the_study.set_user_attr("conditions", {key: {p: list(v) for p, v in c.items()}
                                           for key, c in conditions.when_of(search).items()})
    the_study.set_user_attr("fixed_overrides", [study_storage.redact(o) for o in fixed])
    the_study.set_user_attr("command", study_storage.redact(" ".join(["python -m runner", *sys.argv[1:]])))


def default_study_name(name: str, fixed: list[str], search: dict) -> str:
    """The same sweep command names the same study, so running it again resumes it."""
    description = repr((sorted(fixed), sorted((k, repr(v)) for k, v in search.items())))
    if conditions.when_of(search):  # another space; without conditions the name stays what it was
        description += repr(sorted((k, sorted(c.items())) for k, c in conditions.when_of(search).items()))
    return f"{name}-{hashlib.sha1(description.encode()).hexdigest()[:8]}"
