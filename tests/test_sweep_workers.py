"""Sweep workers: TPE draws its own points in each worker; what the dashboard shows (user attrs)."""

from __future__ import annotations

import optuna
import pytest

from runner.common.study_storage import storage_for
from runner.sweep import study
from tests.conftest import run_cli
from tests.test_sweep import LR, sweep_args


def test_two_tpe_workers_draw_distinct_points_and_lie_about_running_trials():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.InMemoryStorage()
    first, second = (optuna.create_study(study_name="s", storage=storage, load_if_exists=True,
                                         sampler=study.make_sampler("tpe", seed=0, worker=worker, options={}, space={}))
                     for worker in ("host-a-101", "host-b-202"))
    a, b = first.ask(), second.ask()
    lr_a, lr_b = a.suggest_float("lr", 1e-4, 1e-1, log=True), b.suggest_float("lr", 1e-4, 1e-1, log=True)
    assert lr_a != lr_b  # with one seed for all workers both trained the same learning rate
    assert first.sampler._constant_liar and first.sampler._multivariate
    again = study.make_sampler("tpe", seed=0, worker="host-a-101", options={}, space={})
    assert again._rng.rng.random() == study.make_sampler("tpe", seed=0, worker="host-a-101", options={}, space={})._rng.rng.random()
    random_sampler = study.make_sampler("random", seed=0, worker="host-b-202", options={}, space={})
    assert isinstance(random_sampler, study.TrialSeededRandomSampler)  # per (seed, trial, parameter): no worker in it


def test_a_retried_trial_shows_its_reason_and_folder_to_the_dashboard():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    the_study = optuna.create_study()
    trial = the_study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
    study.note(the_study, trial._trial_id, "run_dir", "trial_0000")
    assert study.retry_later(the_study, trial, "worker lost (no heartbeat for 60 s)")
    failed, queued = the_study.get_trials(deepcopy=False)
    assert failed.user_attrs["fail_reason"] == "worker lost (no heartbeat for 60 s)"
    assert failed.system_attrs["runner:fail_reason"] == failed.user_attrs["fail_reason"]  # the sweeper reads these
    assert queued.user_attrs == {"retry_of": 0, "run_dir": "trial_0000"}


@pytest.mark.slow
def test_the_study_records_its_search_space_fixed_overrides_and_command(workdir):
    sweep_dir = workdir / "sweep"
    result = run_cli(sweep_args(sweep_dir, LR, "hydra.sweeper.n_trials=1"), cwd=workdir)
    assert result.returncode == 0, result.stdout[-2000:]
    loaded = optuna.load_study(study_name="test", storage=storage_for(str(sweep_dir / "study.journal")))
    attrs = loaded.user_attrs
    assert attrs["search_space"] == {"optimizer.lr": "FloatDistribution(high=0.1, log=True, low=0.0001, step=None)"}
    assert "+experiment=smoke" in attrs["fixed_overrides"] and "python -m runner" in attrs["command"]
    assert loaded.trials[0].user_attrs["run_dir"] == "trial_0000"


def test_an_enqueued_trial_counts_when_it_starts_and_shows_its_parameters(tmp_path):
    from runner.sweep import results

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    the_study = optuna.create_study()
    the_study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-1, log=True), n_trials=2)
    the_study.enqueue_trial({"lr": 0.005})
    assert study.budget_used(the_study) == 2  # the waiting point has not used the budget: with n_trials=3 it runs
    results.write_trials_csv(the_study, tmp_path)
    waiting = (tmp_path / "trials.csv").read_text().splitlines()[-1]
    assert waiting.startswith("2,WAITING,0.005,")


@pytest.mark.slow
def test_a_sweep_stopped_by_failures_says_so_in_one_line_with_its_files_up_to_date(workdir):
    sweep_dir = workdir / "sweep"
    result = run_cli(sweep_args(sweep_dir, "optimizer.lr=choice(1e30,1e35)", "hydra.sweeper.n_trials=4",
                                "hydra.sweeper.max_failure_rate=0.25"), cwd=workdir)
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr
    assert "more than max_failure_rate=0.25 of n_trials=4: the sweep stops" in result.stdout
    loaded = optuna.load_study(study_name="test", storage=storage_for(str(sweep_dir / "study.journal")))
    listed = (sweep_dir / "trials.csv").read_text().splitlines()[1:]
    assert len(listed) == len(loaded.trials) == 2  # every trial the study has, none stale
    assert "no trial completed" in (sweep_dir / "optimization_results.yaml").read_text()
    assert not (workdir / "multirun").exists()  # Hydra's own folder, unused by this sweeper, is gone


def test_a_lost_trial_whose_run_finished_is_recorded_with_its_value(tmp_path):
    """The worker died between the end of the run and telling the study: the run folder has the answer."""
    import json

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    the_study = optuna.create_study(direction="maximize")
    distributions = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
    finished, unfinished = the_study.ask(distributions), the_study.ask(distributions)
    for trial, status in ((finished, "finished"), (unfinished, "running")):
        run_dir = tmp_path / f"trial_{trial.number:04d}"
        (run_dir / "eval").mkdir(parents=True)
        (run_dir / "run.json").write_text(json.dumps({"status": status}))
        (run_dir / "eval" / "best.json").write_text(json.dumps({"checkpoint": "checkpoints/epoch-0001.pt", "metric": "top1",
                                                                "value": 0.875, "metrics": {"top1": 0.875}}))
        study.note(the_study, trial._trial_id, "run_dir", run_dir.name)
    lost = study.fail_lost_trials(the_study, grace_seconds=0, max_retries=1, sweep_dir=tmp_path,
                                  objectives=["top1"])
    states = {t.number: (t.state.name, t.value) for t in the_study.get_trials(deepcopy=False)}
    assert states[finished.number] == ("COMPLETE", 0.875)  # not "worker lost ... left as FAIL"
    assert states[unfinished.number][0] == "FAIL" and lost == [unfinished.number]


def test_trials_a_live_worker_holds_keep_their_heartbeat_and_another_workers_end_is_not_a_crash():
    import time

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    the_study = optuna.create_study()
    first, queued = the_study.ask(), the_study.ask()  # n_jobs=2 on the basic launcher: run one after the other
    with study.hold(the_study, [first, queued], seconds=0.05):
        time.sleep(0.4)
        assert study.fail_lost_trials(the_study, grace_seconds=0.3, max_retries=1, sweep_dir=None,
                                      objectives=["top1"]) == []
    time.sleep(0.4)
    assert study.fail_lost_trials(the_study, grace_seconds=0.3, max_retries=0, sweep_dir=None,
                                  objectives=["top1"]) == [0, 1]
    assert not study.tell_unless_ended(the_study, queued, 0.5)  # another worker failed it: no ValueError
    assert the_study.trials[1].state.name == "FAIL"


def test_coarse_to_fine_keeps_steps_and_its_ranges_parse_back_to_values_the_config_takes():
    from runner.sweep import space

    dists = {"trainer.batch_size": optuna.distributions.IntDistribution(32, 96, step=32),
             "model.dropout": optuna.distributions.FloatDistribution(0.0, 0.5, step=0.1),
             "optimizer.lr": optuna.distributions.FloatDistribution(1e-5, 1.0, log=True)}
    top = [{"trainer.batch_size": 64, "model.dropout": 0.2, "optimizer.lr": 1e-3},
           {"trainer.batch_size": 96, "model.dropout": 0.3, "optimizer.lr": 1e-2}]
    suggestion = space.narrowed(dists, top)
    assert suggestion["trainer.batch_size"] == "range(32, 97, 32)"  # on the old grid, not int(interval(57, 71))
    assert suggestion["model.dropout"] == "range(0.1, 0.45, 0.1)"
    _, parsed = space.parse([f"{key}={value}" for key, value in suggestion.items()], {})
    assert parsed["trainer.batch_size"] == optuna.distributions.IntDistribution(32, 96, step=32)
    assert parsed["optimizer.lr"].log


@pytest.mark.parametrize(("bad", "named"), [("trainer.micro_batch_size=range(0, 17, 8)", "trainer.micro_batch_size=0"),
                                           ("model=choice(convnet, no_such_model)", "no_such_model"),
                                           ("optimizer.lr=interval(-0.1, 0.1)", "optimizer.lr=-0.1")])
def test_a_search_space_that_reaches_a_refused_setting_is_refused_before_any_trial(workdir, bad, named):
    sweep_dir = workdir / "sweep"
    result = run_cli(["-m", "+experiment=smoke", "hydra/sweeper=runner_optuna", f"hydra.sweeper.sweep_dir={sweep_dir}",
                      bad, "hydra.sweeper.n_trials=3"], cwd=workdir)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    key = bad.split("=")[0]
    line = [x for x in (result.stdout + result.stderr).splitlines() if "search space" in x]
    assert line and key in line[0] and "Fix:" in line[0], result.stdout[-2000:] + result.stderr[-2000:]
    assert line[0].count(named) >= 2 and "hydra" not in line[0].split("runner refuses:")[1], line[0]  # its own cause
    assert "Traceback" not in result.stderr
    assert not list(sweep_dir.glob("trial_*"))  # nothing trained


def test_coarse_to_fine_prints_only_ranges_the_config_accepts(tmp_path):
    from runner.sweep import results

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    the_study = optuna.create_study(direction="maximize")
    dists = {"optimizer.lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
             "trainer.batch_size": optuna.distributions.IntDistribution(8, 64, step=8)}
    for i, (lr, batch) in enumerate([(1e-3, 16), (3e-3, 24), (1e-2, 32), (3e-2, 8)]):
        the_study.add_trial(optuna.trial.create_trial(params={"optimizer.lr": lr, "trainer.batch_size": batch},
                                                      distributions=dists, value=float(i)))

    def refuses_big_batches(override: str) -> str | None:  # a planted rule: the config refuses batches over 16
        key, value = override.split("=")
        return "too big. Fix: 16 or less" if key == "trainer.batch_size" and int(value) > 16 else None

    best = results.write_best(the_study, tmp_path, [], dists, refused=refuses_big_batches)
    overrides = best["coarse_to_fine"]["overrides"]
    assert any(o.startswith("'optimizer.lr=") for o in overrides)
    assert not any("trainer.batch_size" in o for o in overrides)
    assert "trainer.batch_size" in best["coarse_to_fine"]["left_out"][0] and "too big" in best["coarse_to_fine"]["left_out"][0]
