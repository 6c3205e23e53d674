"""Samplers and pruners by name, with their settings from the config (hydra.sweeper.sampler_options,
pruner_options), and the checks that refuse a setting that cannot work, in one line."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from runner.common.errors import UserError
from runner.common.study_storage import make_pruner
from runner.sweep import study

SPACE = {"optimizer.lr": FloatDistribution(1e-4, 1e-1, log=True), "trainer.batch_size": IntDistribution(16, 64, step=16),
         "model": CategoricalDistribution(["convnet", "mlp"])}
GRID = {"trainer.batch_size": IntDistribution(16, 64, step=16), "model": CategoricalDistribution(["convnet", "mlp"]),
        "model.dropout": FloatDistribution(0.0, 0.2, step=0.1)}


def run_study(sampler, space, n: int, directions=("maximize",)) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    the_study = optuna.create_study(sampler=sampler, directions=list(directions))
    for _ in range(n):
        trial = the_study.ask(space)
        the_study.tell(trial, [float(i) for i, _ in enumerate(directions)] if len(directions) > 1 else 0.5)
    return the_study


@pytest.mark.parametrize("name", ["random", "tpe", "qmc", "cmaes", "nsgaii"])
def test_every_named_sampler_draws_points_inside_the_space(name):
    sampler = study.make_sampler(name, seed=0, worker="host-1", options={}, space=SPACE)
    for trial in run_study(sampler, SPACE, 6).trials:
        assert 1e-4 <= trial.params["optimizer.lr"] <= 1e-1
        assert trial.params["trainer.batch_size"] in (16, 32, 48, 64)
        assert trial.params["model"] in ("convnet", "mlp")


def test_sampler_options_reach_the_sampler_and_a_wrong_one_is_named():
    tpe = study.make_sampler("tpe", seed=0, worker="w", options={"n_startup_trials": 3, "multivariate": False},
                             space=SPACE)
    assert tpe._n_startup_trials == 3 and not tpe._multivariate
    qmc = study.make_sampler("qmc", seed=7, worker="w", options={"qmc_type": "halton"}, space=SPACE)
    assert qmc._qmc_type == "halton" and qmc._seed == 7  # the same sequence in every worker
    with pytest.raises(UserError, match=r"hydra.sweeper.sampler_options.*n_startup_trial.*tpe.*Fix"):
        study.make_sampler("tpe", seed=0, worker="w", options={"n_startup_trial": 3}, space=SPACE)
    with pytest.raises(UserError, match=r"sampler='sobol'.*Fix: .*qmc"):
        study.make_sampler("sobol", seed=0, worker="w", options={}, space=SPACE)


def test_grid_visits_every_point_once_and_refuses_a_continuous_range():
    sampler = study.make_sampler("grid", seed=0, worker="w", options={}, space=GRID)
    assert study.grid_size(GRID) == 4 * 2 * 3
    points = {tuple(sorted(t.params.items())) for t in run_study(sampler, GRID, 24).trials}
    assert len(points) == 24  # every point of the grid, none twice
    with pytest.raises(UserError, match=r"optimizer.lr.*continuous.*Fix: .*choice"):
        study.make_sampler("grid", seed=0, worker="w", options={}, space=SPACE)


def test_pruner_options_reach_the_pruner_and_a_wrong_one_is_named():
    median = make_pruner("median", {"n_startup_trials": 5, "n_warmup_steps": 2})
    assert median._n_startup_trials == 5 and median._n_warmup_steps == 2
    assert make_pruner("median", {})._n_startup_trials == 2  # the runner's default: prune from the third trial
    hyperband = make_pruner("hyperband", {"min_resource": 1, "max_resource": 10})
    assert hyperband._min_resource == 1 and hyperband._max_resource == 10
    assert isinstance(make_pruner("percentile", {"percentile": 25.0}), optuna.pruners.PercentilePruner)
    with pytest.raises(UserError, match=r"pruner_options.*warmup.*median.*Fix"):
        make_pruner("median", {"warmup": 2})


def test_a_trials_job_builds_the_pruner_the_sweeper_was_given(tmp_path):
    from omegaconf import OmegaConf

    from runner.common.study_storage import storage_for
    from runner.sweep.trial_link import TrialLink

    journal = str(tmp_path / "study.journal")
    the_study = optuna.create_study(study_name="s", storage=storage_for(journal))
    the_study.set_user_attr("pruner_options", {"n_startup_trials": 4, "n_warmup_steps": 3})
    trial = the_study.ask()
    link = TrialLink(OmegaConf.create({"storage": journal, "study": "s", "trial": trial.number,
                                       "trial_id": trial._trial_id, "pruner": "median", "heartbeat_seconds": 1}))
    assert link.study.pruner._n_startup_trials == 4 and link.study.pruner._n_warmup_steps == 3


@pytest.mark.slow
def test_a_grid_sweep_tries_each_point_once_and_stops_at_the_grids_size(workdir):
    from tests.conftest import run_cli
    from tests.test_sweep import load, sweep_args

    sweep_dir = workdir / "sweep"
    result = run_cli(sweep_args(sweep_dir, "model.channels=choice(4,8)", "trainer.epochs=range(1,3)",
                                "hydra.sweeper.sampler=grid", "hydra.sweeper.n_trials=10", "hydra.sweeper.n_jobs=3"),
                     cwd=workdir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "the grid has 4 points: the sweep runs 4 trials, not n_trials=10" in result.stdout + result.stderr
    trials = load(sweep_dir).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert sorted((t.params["model.channels"], t.params["trainer.epochs"]) for t in trials) == [
        (4, 1), (4, 2), (8, 1), (8, 2)]
