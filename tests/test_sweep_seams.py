"""The sweeper's seams with the outside: trials it did not create (Optuna's own enqueue_trial, crafted
WAITING trials), quoted choice values, and the data checked once before the first trial."""

from __future__ import annotations

import logging
from dataclasses import asdict

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hydra_plugins.runner_sweeper.runner_sweeper import RunnerOptunaSweeper, RunnerOptunaSweeperConf
from runner.common.study_storage import storage_for
from runner.sweep import study as sweep_study
from tests.conftest import run_cli
from tests.test_sweep import LR, TINY_SWEEP, load, sweep_args

SEARCH = {"optimizer.lr": FloatDistribution(1e-4, 1e-1, log=True),
          "model.channels": CategoricalDistribution([4, 8]),
          "trainer.batch_size": IntDistribution(16, 64, step=16)}


class RecordingLauncher:
    """Hydra's launcher, in this process: every job completes with 0.5; the overrides are kept."""

    def __init__(self):
        self.jobs: list[list[str]] = []

    def launch(self, batch, initial_job_idx):
        self.jobs += batch
        return [JobReturn(status=JobStatus.COMPLETED, _return_value=0.5) for _ in batch]


def sweeper_on(tmp_path, n_trials: int):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = {**asdict(RunnerOptunaSweeperConf()), "n_trials": n_trials, "n_jobs": 1, "max_failure_rate": 1.0}
    sweeper = RunnerOptunaSweeper(**settings)
    sweeper.config = OmegaConf.create({"evaluate": {"metric": "top1", "direction": "auto"}})
    sweeper.launcher, sweeper.n_trials, sweeper.objectives = RecordingLauncher(), n_trials, ["top1"]
    storage = str(tmp_path / "study.journal")
    the_study = optuna.create_study(study_name="test", storage=storage_for(storage), direction="maximize",
                                    sampler=sweep_study.make_sampler("random", 0, "w", {}, SEARCH))
    return sweeper, the_study, storage


def run(sweeper, the_study, tmp_path, storage) -> list[dict]:
    """The sweeper's loop; the parameters of each launched job, as its overrides say."""
    sweeper.run_trials(the_study, SEARCH, [], tmp_path, storage)
    return [dict(o.split("=", 1) for o in job if o.split("=", 1)[0] in SEARCH) for job in sweeper.launcher.jobs]


def crafted(the_study, system_attrs: dict) -> None:
    """A WAITING trial as a script could add it with Optuna's own API: any system attributes."""
    the_study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING, system_attrs=system_attrs))


BAD_QUEUED = {
    "a string for a number": lambda s: s.enqueue_trial({"optimizer.lr": "abc"}),
    "a number string": lambda s: s.enqueue_trial({"optimizer.lr": "0.01"}),
    "outside the range": lambda s: s.enqueue_trial({"optimizer.lr": 5.0}),
    "not a choice": lambda s: s.enqueue_trial({"model.channels": 16}),
    "a choice of the wrong type": lambda s: s.enqueue_trial({"model.channels": "4"}),
    "off the step": lambda s: s.enqueue_trial({"trainer.batch_size": 20}),
    "a fraction for an integer": lambda s: s.enqueue_trial({"trainer.batch_size": 32.5}),
    "a bool for an integer": lambda s: s.enqueue_trial({"trainer.batch_size": True}),
    "not in the search space": lambda s: s.enqueue_trial({"optimizer.momentum": 0.9}),
    "a NaN": lambda s: s.enqueue_trial({"optimizer.lr": float("nan")}),
    "fixed_params not a dict": lambda s: crafted(s, {"fixed_params": "optimizer.lr"}),
    "fixed_params a list": lambda s: crafted(s, {"fixed_params": [1, 2]}),
    "a run folder outside the sweep": lambda s: crafted(s, {"fixed_params": {}, "runner:run_dir": "../../elsewhere"}),
    "a run folder that is not a name": lambda s: crafted(s, {"runner:run_dir": 7}),
    "retries not a number": lambda s: crafted(s, {"runner:retries": "many"}),
    "a finished trial's record": lambda s: crafted(s, {"runner:retried": True}),
}


@pytest.mark.parametrize("kind", list(BAD_QUEUED))
def test_a_bad_queued_trial_is_failed_with_one_warning_and_the_sweep_goes_on(tmp_path, caplog, kind):
    sweeper, the_study, storage = sweeper_on(tmp_path, n_trials=2)
    BAD_QUEUED[kind](the_study)
    with caplog.at_level(logging.WARNING, logger="runner.sweep"):
        launched = run(sweeper, the_study, tmp_path, storage)
    trials = the_study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]  # the bad one used no budget
    assert len(launched) == 2 and all(set(p) == set(SEARCH) for p in launched)
    reason = trials[0].system_attrs["runner:fail_reason"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "trial 0" in r.getMessage()]
    assert len(warnings) == 1 and reason in warnings[0] and "\n" not in warnings[0], warnings
    assert not list(tmp_path.parent.glob("elsewhere"))
    assert (tmp_path / "trials.csv").read_text().count("\n") == 4  # the file is still written


def test_a_valid_enqueued_point_runs_as_given_and_its_missing_parameters_are_drawn(tmp_path):
    sweeper, the_study, storage = sweeper_on(tmp_path, n_trials=3)
    the_study.enqueue_trial({"optimizer.lr": 0.005, "model.channels": 8, "trainer.batch_size": 48})
    the_study.enqueue_trial({"optimizer.lr": 1e-3})  # Optuna's documented partial point: the rest is sampled
    the_study.enqueue_trial({"trainer.batch_size": 32.0, "model.channels": 8.0})  # numbers of another type, same value
    launched = run(sweeper, the_study, tmp_path, storage)
    trials = the_study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert launched[0] == {"optimizer.lr": "0.005", "model.channels": "8", "trainer.batch_size": "48"}
    assert launched[1]["optimizer.lr"] == "0.001" and set(launched[1]) == set(SEARCH)
    assert trials[2].params["trainer.batch_size"] == 32 and launched[2]["trainer.batch_size"] == "32"
    assert launched[2]["model.channels"] == "8"  # the choice itself, an int, as the setting takes


def test_a_retry_of_a_lost_trial_keeps_its_folder_but_a_crafted_one_cannot_take_another_trials(tmp_path, caplog):
    sweeper, the_study, storage = sweeper_on(tmp_path, n_trials=1)
    done = the_study.ask(SEARCH)
    sweep_study.note(the_study, done._trial_id, "run_dir", "trial_0000")
    the_study.tell(done, 0.9)
    crafted(the_study, {"fixed_params": {"optimizer.lr": 0.01}, "runner:run_dir": "trial_0000"})
    sweeper.n_trials = 2
    with caplog.at_level(logging.WARNING, logger="runner.sweep"):
        run(sweeper, the_study, tmp_path, storage)
    trials = the_study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert "trial_0000" in trials[1].system_attrs["runner:fail_reason"]
    assert trials[2].system_attrs["runner:run_dir"] == "trial_0002"


@pytest.mark.slow
def test_points_queued_with_optunas_own_api_through_the_real_command(workdir):
    sweep_dir = workdir / "sweep"
    outside = optuna.create_study(study_name="test", storage=storage_for(str(sweep_dir / "study.journal")),
                                  direction="maximize")
    outside.enqueue_trial({"optimizer.lr": "abc"})  # crashed the worker at ask(), the trial left RUNNING
    outside.enqueue_trial({"optimizer.lr": 0.005})
    result = run_cli(sweep_args(sweep_dir, LR, "hydra.sweeper.n_trials=1"), cwd=workdir)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Traceback" not in output, output[-3000:]
    trials = load(sweep_dir).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[1].params == {"optimizer.lr": 0.005}
    assert "optimizer.lr='abc'" in trials[0].system_attrs["runner:fail_reason"]
    assert len([line for line in output.splitlines() if "trial 0, queued from outside" in line]) == 1


QUOTED = ['"a,b"', "'x,y'", '"10"', "'null'", '"true"', '" padded "', '"a=b"', "'it\\'s'", '"say \\"hi\\""',
          '"tail\\\\"', '"1e-3"', '"[1, 2]"', '"(x)"']


@pytest.mark.parametrize("quoted", QUOTED)
def test_a_quoted_choice_value_reaches_the_trial_as_the_string_it_is(quoted):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from runner.sweep import space
    from tests.conftest import compose_config

    expected = OverridesParser.create().parse_override(f"k={quoted}").value()
    _, parsed = space.parse([f"name=choice({quoted}, c)"], {})
    assert parsed["name"].choices == (expected, "c")
    for override in [*space.end_overrides("name", parsed["name"]), *space.as_overrides({"name": expected})]:
        value = compose_config([override]).name
        assert value in (expected, "c") and type(value) is str, override
    assert compose_config(space.as_overrides({"name": expected})).name == expected
    narrowed = space.narrowed(parsed, [{"name": expected}])["name"]  # coarse to fine's choice(...) keeps it
    assert space.parse([f"name={narrowed}"], {})[1]["name"].choices == (expected,)


def test_choices_of_other_kinds_keep_theirs():
    from runner.sweep import space
    from tests.conftest import compose_config

    _, parsed = space.parse(["dataset.image_size=choice([8,8],[16,16])", "model=choice(convnet, mlp)",
                             "trainer.epochs=choice(1, 2)", "optimizer.lr=choice(1e-3, 0.01)"], {})
    overrides = [o for key, d in parsed.items() for o in space.end_overrides(key, d)[:1]]
    config = compose_config(["dataset=synthetic", *overrides])
    assert list(config.dataset.image_size) == [8, 8] and config.trainer.epochs == 1 and config.optimizer.lr == 1e-3
    assert overrides[1] == "model=convnet"


@pytest.mark.slow
def test_quoted_choices_with_commas_through_the_real_command(workdir):
    sweep_dir = workdir / "sweep"
    result = run_cli(sweep_args(sweep_dir, "name=choice(\"a,b\", 'x,y')", "hydra.sweeper.sampler=grid",
                                "hydra.sweeper.n_trials=2", "trainer.epochs=1"), cwd=workdir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trials = load(sweep_dir).trials
    assert sorted(t.params["name"] for t in trials) == ["a,b", "x,y"]
    for trial in trials:
        config = OmegaConf.load(sweep_dir / trial.system_attrs["runner:run_dir"] / ".hydra" / "config.yaml")
        assert config.name == trial.params["name"]


def test_the_printed_commands_keep_the_quotes_through_the_shell(tmp_path):
    import shlex

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from runner.sweep import results

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = {"name": CategoricalDistribution(["a,b", "c d", "10"])}
    the_study = optuna.create_study(direction="maximize")
    for value, name in ((0.9, "a,b"), (0.5, "c d"), (0.1, "10")):
        the_study.add_trial(optuna.trial.create_trial(params={"name": name}, distributions=search, value=value))
    best = results.write_best(the_study, tmp_path, ["dataset.image_size=[16,16]"], search)
    parser = OverridesParser.create()
    words = shlex.split(best["reproduce"])  # as the shell hands them to python -m runner
    assert words[:3] == ["python", "-m", "runner"] and "dataset.image_size=[16,16]" in words
    assert parser.parse_override(words[-1]).value() == "a,b"
    [suggestion] = best["coarse_to_fine"]["overrides"]
    [word] = shlex.split(suggestion)
    assert parser.parse_override(word).value().list == ["a,b", "c d", "10"]


MISSING_CIFAR = ["dataset=cifar10", "dataset.download=false", "model=linear", "trainer.epochs=1",
                 "evaluate.galleries=false", "hydra/sweeper=runner_optuna", "hydra.sweeper.study_name=test"]


def test_a_sweep_on_a_missing_dataset_stops_before_its_first_trial(workdir):
    sweep_dir = workdir / "sweep"
    result = run_cli(["-m", *MISSING_CIFAR, LR, f"dataset.root={workdir / 'nowhere'}",
                      f"hydra.sweeper.sweep_dir={sweep_dir}"], cwd=workdir)  # n_trials=20: 11 burnt before
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if "CIFAR-10 not found" in line]
    assert len(lines) == 1 and "Fix:" in lines[0] and str(workdir / "nowhere") in lines[0], output[-3000:]
    assert "trial 0" not in output and not list(sweep_dir.glob("trial_*"))
    journal = sweep_dir / "study.journal"
    assert not journal.exists() or load(sweep_dir).trials == []


@pytest.mark.slow
def test_check_data_false_leaves_the_data_to_the_trials(workdir):
    skipped = run_cli(["-m", *MISSING_CIFAR, LR, f"dataset.root={workdir / 'nowhere'}", "hydra.sweeper.check_data=false",
                       "hydra.sweeper.n_trials=1", f"hydra.sweeper.sweep_dir={workdir / 'unchecked'}"], cwd=workdir)
    assert [t.state.name for t in load(workdir / "unchecked").trials] == ["FAIL"], skipped.stdout[-3000:]


def fake_builds(works: dict[str, str | None]):
    """A data check that reports works[root] for dataset.root (None: the data is there), and counts its calls."""
    calls = []

    def build(dataset) -> str | None:
        calls.append(dataset.root)
        return works[dataset.root]
    return build, calls


def job_config(root: str, **others):
    return OmegaConf.create({"dataset": {"name": "cifar10", "root": root}, **others})


def test_the_data_is_judged_on_the_base_config_only_where_no_swept_setting_changes_it():
    from runner.common.errors import UserError
    from runner.sweep import data_check

    build, calls = fake_builds({"/missing": "CIFAR-10 not found in /missing. Fix: dataset.root=FOLDER", "/data": None})
    ends = {"optimizer.lr=0.0001": job_config("/missing"), "optimizer.lr=0.1": job_config("/missing")}
    with pytest.raises(UserError, match=r"^before the first trial: CIFAR-10 not found in /missing\. Fix: "):
        data_check.check(job_config("/missing"), ends, build)
    assert calls == ["/missing"]  # once, on the base config
    data_check.check(job_config("/data"), {"optimizer.lr=0.1": job_config("/data")}, build)

    # swept through the dataset: judged at its values, and not stopped while one of them works
    build, calls = fake_builds({"/missing": "CIFAR-10 not found. Fix: x", "/data": None, "/other": "gone. Fix: y"})
    swept = {"dataset.root=/missing": job_config("/missing"), "dataset.root=/data": job_config("/data"),
             "optimizer.lr=0.1": job_config("/missing")}
    data_check.check(job_config("/data"), swept, build)  # the base's root is one of the values: tried as one
    assert calls == ["/missing", "/data"]
    data_check.check(job_config("/missing"), {"dataset.root=/missing": job_config("/missing"),
                                              "dataset.root=/other": job_config("/other")}, build)  # differ: trials judge
    same = {"dataset.subset=10": job_config("/missing", s=1), "dataset.subset=20": job_config("/missing", s=2)}
    same = {k: OmegaConf.merge(v, {"dataset": {"subset": int(k[-2:])}}) for k, v in same.items()}
    with pytest.raises(UserError, match="dataset.subset"):  # every value fails alike: not the swept value's doing
        data_check.check(job_config("/missing"), same, build)


@pytest.mark.slow
def test_a_swept_dataset_is_not_judged_by_one_of_its_values(workdir):
    sweep_dir = workdir / "sweep"
    result = run_cli(["-m", *MISSING_CIFAR, "dataset=choice(cifar10, synthetic)", f"dataset.root={workdir / 'nowhere'}",
                      "hydra.sweeper.sampler=grid", "hydra.sweeper.n_trials=2", f"hydra.sweeper.sweep_dir={sweep_dir}"],
                     cwd=workdir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    states = {t.params["dataset"]: t.state.name for t in load(sweep_dir).trials}
    assert states == {"cifar10": "FAIL", "synthetic": "COMPLETE"}


def test_a_running_trial_with_crafted_attributes_is_lost_like_any_other_not_a_crash(tmp_path, caplog):
    sweeper, the_study, storage = sweeper_on(tmp_path, n_trials=3)  # the first lost trial, out of retries, counts
    sweeper.settings.grace_seconds = 0.0  # every RUNNING trial not this worker's is lost at once
    running = optuna.trial.TrialState.RUNNING
    for attrs in ({"runner:heartbeat": "soon", "runner:retries": "many", "runner:run_dir": "/etc"},
                  {"runner:heartbeat": [1], "runner:run_dir": "../up", "fixed_params": {"optimizer.lr": 0.01}}):
        the_study.add_trial(optuna.trial.create_trial(state=running, system_attrs=attrs))
    with caplog.at_level(logging.WARNING, logger="runner.sweep"):
        launched = run(sweeper, the_study, tmp_path, storage)
    trials = the_study.get_trials()
    assert [t.state.name for t in trials[:2]] == ["FAIL", "FAIL"] and len(launched) == 2
    assert all(t.system_attrs["runner:fail_reason"].startswith("worker lost") for t in trials[:2])
    assert {t.system_attrs["runner:run_dir"] for t in trials[2:]} <= {"trial_0002", "trial_0003", "trial_0004"}
    assert [t.state.name for t in trials[2:]].count("COMPLETE") == 2


@pytest.mark.slow
def test_an_enqueued_point_whose_number_has_another_type_runs_as_its_parameter_takes_it(workdir):
    sweep_dir = workdir / "sweep"
    result = run_cli(sweep_args(sweep_dir, "trainer.batch_size=range(16, 65, 16)", "trainer.micro_batch_size=16",
                                "hydra.sweeper.enqueue=[{trainer.batch_size:32.0}]", "hydra.sweeper.n_trials=1"),
                     cwd=workdir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [trial] = load(sweep_dir).trials
    assert trial.params == {"trainer.batch_size": 32} and trial.state.name == "COMPLETE"


@pytest.mark.slow
def test_a_sweep_folder_and_study_name_with_commas_reach_the_trial(workdir):
    sweep_dir = workdir / "odd, (dir)"
    result = run_cli([*TINY_SWEEP, LR, f"hydra.sweeper.sweep_dir='{sweep_dir}'", "hydra.sweeper.study_name='st,udy'",
                      "hydra.sweeper.n_trials=1"], cwd=workdir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    study = optuna.load_study(study_name="st,udy", storage=storage_for(str(sweep_dir / "study.journal")))
    assert [t.state.name for t in study.trials] == ["COMPLETE"]
    assert (sweep_dir / "trial_0000" / "run.json").is_file()


def test_a_worker_killed_between_asking_and_naming_the_folder_leaves_a_folderless_trial_retried_in_a_new_one(
        tmp_path):
    sweeper, the_study, storage = sweeper_on(tmp_path, n_trials=1)
    sweeper.settings.grace_seconds = 0.0
    the_study.ask(SEARCH)  # the killed worker got this far: a RUNNING trial, no folder named yet
    run(sweeper, the_study, tmp_path, storage)
    lost, retry = the_study.get_trials()
    assert lost.state.name == "FAIL" and lost.system_attrs["runner:fail_reason"].startswith("worker lost")
    assert "runner:run_dir" not in lost.system_attrs and "run_dir" not in lost.user_attrs  # it never had one
    assert retry.state.name == "COMPLETE" and retry.params == lost.params
    assert retry.system_attrs["runner:run_dir"] == retry.user_attrs["run_dir"] == "trial_0001"
