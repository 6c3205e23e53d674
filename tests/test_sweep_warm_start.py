"""Known-good points first: hydra.sweeper.enqueue=[{...}] and hydra.sweeper.warm_start=SWEEP_DIR (an
earlier study's top trials, enqueued into the new, narrowed one), each point checked before it runs."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from runner.errors import UserError
from runner.study_storage import storage_for
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
def test_warm_start_enqueues_the_earlier_sweeps_best_into_the_narrowed_one(workdir):
    coarse = workdir / "coarse"
    result = run_cli(sweep_args(coarse, LR, "hydra.sweeper.n_trials=4"), cwd=workdir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranked = sorted(load(coarse).trials, key=lambda t: t.value, reverse=True)
    assert f"hydra.sweeper.warm_start={coarse}" in result.stdout  # the printed next step carries the warm start
    fine = workdir / "fine"
    result = run_cli(sweep_args(fine, "optimizer.lr=tag(log, interval(1e-4, 1e-1))", f"hydra.sweeper.warm_start={coarse}",
                                "hydra.sweeper.warm_start_top=2", "hydra.sweeper.n_trials=3"), cwd=workdir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trials = load(fine).trials
    assert len(trials) == 3
    assert [t.params["optimizer.lr"] for t in trials[:2]] == [t.params["optimizer.lr"] for t in ranked[:2]]
