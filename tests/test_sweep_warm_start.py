"""Known-good points first: hydra.sweeper.enqueue=[{...}] and hydra.sweeper.warm_start=SWEEP_DIR (an
earlier study's top trials, enqueued into the new, narrowed one), each point checked before it runs."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from runner.common.errors import UserError
from runner.common.study_storage import storage_for
from runner.sweep import warm_start
from tests.conftest import run_cli
from tests.test_sweep import LR, load, sweep_args

SPACE = {"optimizer.lr": FloatDistribution(1e-4, 1e-1, log=True), "model": CategoricalDistribution(["convnet", "mlp"])}


def finished_study(path, values: list[float], direction: str = "maximize") -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="old", storage=storage_for(str(path / "study.journal")), direction=direction)
    for i, value in enumerate(values):
        study.add_trial(optuna.trial.create_trial(params={"optimizer.lr": 10.0 ** -(i + 1), "model": "mlp"},
                                                  distributions=SPACE, value=value))
    (path / "optimization_results.yaml").write_text("study: old\n")
    return study


def test_an_earlier_sweeps_top_trials_are_its_best_first(tmp_path):
    finished_study(tmp_path, [0.2, 0.9, 0.5, 0.7])
    assert [p["optimizer.lr"] for p in warm_start.top_points(str(tmp_path), top=2, storage_url=None)] == [1e-2, 1e-4]
    (tmp_path / "min").mkdir()
    finished_study(tmp_path / "min", [0.2, 0.9, 0.5], direction="minimize")
    assert [p["optimizer.lr"] for p in warm_start.top_points(str(tmp_path / "min"), top=1, storage_url=None)] == [1e-1]
    storage = str(tmp_path / "study.journal")  # by study name, in this sweep's own storage (e.g. PostgreSQL)
    assert [p["optimizer.lr"] for p in warm_start.top_points("old", top=1, storage_url=storage)] == [1e-2]
    with pytest.raises(UserError, match=r"hydra.sweeper.warm_start=nothing is neither a sweep folder nor a study in "
                                        r".*study.journal \(it holds old\). Fix"):
        warm_start.top_points("nothing", top=2, storage_url=storage)


def test_a_point_outside_the_search_space_is_named():
    assert warm_start.check_point({"optimizer.lr": 1e-3}, SPACE) is None
    assert "not in the search space" in warm_start.check_point({"optimizer.momentum": 0.9}, SPACE)
    assert "outside" in warm_start.check_point({"optimizer.lr": 3.0}, SPACE)
    assert "outside" in warm_start.check_point({"model": "resnet18"}, SPACE)


@pytest.mark.slow
def test_enqueued_points_run_first_once_and_a_bad_one_is_refused(workdir):
    sweep_dir = workdir / "sweep"
    point = "hydra.sweeper.enqueue=[{optimizer.lr:0.005}]"
    result = run_cli(sweep_args(sweep_dir, LR, point, "hydra.sweeper.n_trials=2"), cwd=workdir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    result = run_cli(sweep_args(sweep_dir, LR, point, "hydra.sweeper.n_trials=3"), cwd=workdir)  # the same command, more
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lrs = [t.params["optimizer.lr"] for t in load(sweep_dir).trials]
    assert len(lrs) == 3 and lrs[0] == 0.005 and lrs.count(0.005) == 1  # first, and once
    bad = run_cli(sweep_args(workdir / "other", LR, "hydra.sweeper.enqueue=[{optimizer.lr:5.0}]"), cwd=workdir)
    assert bad.returncode == 2 and "optimizer.lr=5.0" in bad.stdout and "Fix:" in bad.stdout, bad.stdout[-2000:]


@pytest.mark.slow
def test_warm_start_copies_the_known_values_of_a_sweep_of_the_same_config_and_trains_new_points(workdir):
    coarse = workdir / "coarse"
    result = run_cli(sweep_args(coarse, LR, "hydra.sweeper.n_trials=3"), cwd=workdir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranked = sorted(load(coarse).trials, key=lambda t: t.value, reverse=True)
    assert f"hydra.sweeper.warm_start={coarse}" in result.stdout  # the printed next step carries the warm start
    fine = workdir / "fine"
    command = sweep_args(fine, "optimizer.lr=tag(log, interval(1e-4, 1e-1))", f"hydra.sweeper.warm_start={coarse}",
                         "hydra.sweeper.warm_start_top=2", "hydra.sweeper.n_trials=2")
    result = run_cli(command, cwd=workdir)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    trials = load(fine).trials
    copied, trained = trials[:2], trials[2:]
    assert [(t.params, t.value) for t in copied] == [(t.params, t.value) for t in ranked[:2]]  # known: not trained
    assert [t.user_attrs["copied_from"] for t in copied] == [f"{coarse} trial {t.number}" for t in ranked[:2]]
    assert not (fine / "trial_0000").exists() and not (fine / "trial_0001").exists()
    assert [t.state.name for t in trained] == ["COMPLETE"] * 2  # n_trials new points, the copies use none of it
    assert {t.params["optimizer.lr"] for t in trained}.isdisjoint(t.params["optimizer.lr"] for t in copied)
    said = [line for line in output.splitlines() if "already known" in line]
    assert len(said) == 1 and "2 points" in said[0] and "copied" in said[0], output[-3000:]
    again = run_cli(command, cwd=workdir)  # the same command: nothing copied twice, nothing more to do
    assert again.returncode == 0 and len(load(fine).trials) == 4, again.stdout[-3000:]


def foreign_study(path, fixed: list[str]) -> None:
    """An earlier sweep's study (no trials run here): two finished trials over lr and weight decay."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="old", storage=storage_for(str(path / "study.journal")), direction="maximize")
    study.set_user_attr("fixed_overrides", fixed)
    study.set_user_attr("objectives", ["top1"])
    wide = {"optimizer.lr": FloatDistribution(1e-4, 1e-1, log=True), "optimizer.weight_decay": FloatDistribution(0, 1)}
    for lr, value in ((3e-3, 0.9), (2e-2, 0.5)):
        study.add_trial(optuna.trial.create_trial(params={"optimizer.lr": lr, "optimizer.weight_decay": 0.25},
                                                  distributions=wide, value=value))


@pytest.mark.slow
def test_warm_start_from_another_experiment_says_what_differs_and_trains_its_points_again(workdir):
    old = workdir / "old"
    foreign_study(old, ["+experiment=flowers", "model=resnet18"])
    fine = workdir / "fine"
    result = run_cli(sweep_args(fine, LR, f"hydra.sweeper.warm_start={old}", "hydra.sweeper.warm_start_top=1",
                                "hydra.sweeper.n_trials=1"), cwd=workdir)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    lines = output.splitlines()
    other = [line for line in lines if "other fixed settings" in line]
    assert len(other) == 1 and "+experiment=flowers" in other[0] and "+experiment=smoke" in other[0], output[-3000:]
    dropped = [line for line in lines if "not in this search space" in line]
    assert len(dropped) == 1 and "optimizer.weight_decay" in dropped[0], output[-3000:]
    again = [line for line in lines if "trained again" in line]
    assert len(again) == 1 and "1 point" in again[0], output[-3000:]
    trials = load(fine).trials
    assert [(t.state.name, t.params) for t in trials] == [("COMPLETE", {"optimizer.lr": 3e-3})]
    assert trials[0].system_attrs["runner:run_dir"] == "trial_0000"  # trained here, in its own folder
