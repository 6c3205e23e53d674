"""What a resumed study keeps: its objective (direction, objectives, metric) is refused in one line when the
command asks another; a grid started on a study of another sampler counts the points already run."""

from __future__ import annotations

import warnings

import optuna
import pytest
from optuna.distributions import CategoricalDistribution

from runner.common.study_storage import storage_for
from runner.sweep import resume_rules
from runner.sweep import study as sweep_study
from tests.conftest import run_cli
from tests.test_sweep import LR, sweep_args
from tests.test_sweep_seams import RecordingLauncher, sweeper_on


def single_objective_study(sweep_dir) -> None:
    """A study as the sweeper leaves it: maximize top1, one finished trial."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="test", storage=storage_for(str(sweep_dir / "study.journal")),
                                direction="maximize")
    study.set_user_attr("objectives", ["top1"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["top1"])
    study.add_trial(optuna.trial.create_trial(params={"optimizer.lr": 1e-3}, value=0.5, distributions={
        "optimizer.lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}))


@pytest.mark.parametrize(("change", "asked"), [
    ("hydra.sweeper.direction=minimize", "minimize top1"),
    ("hydra.sweeper.objectives=[top1,parameters]", "maximize top1, minimize parameters"),
    ("hydra.sweeper.objectives=[top5]", "maximize top5"),
    ("evaluate.metric=balanced_accuracy", "maximize balanced_accuracy"),
])
def test_another_objective_on_an_existing_study_is_refused_in_one_line(workdir, change, asked):
    sweep_dir = workdir / "sweep"
    single_objective_study(sweep_dir)
    result = run_cli(sweep_args(sweep_dir, LR, change, "hydra.sweeper.n_trials=2", "hydra.sweeper.check_data=false"),
                     cwd=workdir)
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output, output[-3000:]
    said = [line for line in output.splitlines() if "optimizes" in line]
    assert len(said) == 1, output[-3000:]
    assert "study test" in said[0] and "maximize top1" in said[0] and asked in said[0], said[0]
    assert "Fix:" in said[0] and "hydra.sweeper.study_name=" in said[0], said[0]
    assert not (sweep_dir / "trial_0001").exists()
    loaded = optuna.load_study(study_name="test", storage=storage_for(str(sweep_dir / "study.journal")))
    assert loaded.user_attrs["objectives"] == ["top1"] and len(loaded.trials) == 1  # untouched


def test_the_same_objective_said_another_way_is_the_same_study():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("objectives", ["top1"])
    resume_rules.refuse_another_objective(study, ["top1"], ["maximize"], "s.journal")  # top1, top1:max, auto: one
    older = optuna.create_study(direction="minimize")  # a study without the runner's attributes: its directions
    resume_rules.refuse_another_objective(older, ["loss"], ["minimize"], "s.journal")
    with pytest.raises(Exception, match="optimizes minimize"):
        resume_rules.refuse_another_objective(older, ["top1"], ["maximize"], "s.journal")


GRID = {"model.channels": CategoricalDistribution([4, 8]), "optimizer.lr": CategoricalDistribution([1e-3, 1e-2, 1e-1])}


@pytest.mark.parametrize("earlier", [[0, 2], [1, 1, 5], [3]])
def test_a_grid_on_a_study_of_another_sampler_runs_each_point_once(tmp_path, caplog, earlier):
    """Trials of a random search at grid points (a duplicate too), then sampler=grid on the same study: the grid
    runs the points not yet run, each once, and stops when every point has run."""
    sweeper, random_study, storage = sweeper_on(tmp_path, n_trials=1)
    points = [dict(zip(GRID, values, strict=True)) for values in
              [(c, lr) for c in GRID["model.channels"].choices for lr in GRID["optimizer.lr"].choices]]
    for index in earlier:
        random_study.add_trial(optuna.trial.create_trial(params=points[index], distributions=GRID, value=0.5))
    grid = optuna.load_study(study_name="test", storage=storage_for(storage),
                             sampler=sweep_study.make_sampler("grid", 0, "w", {}, GRID))
    sweeper.launcher = RecordingLauncher()
    with caplog.at_level("WARNING", logger="runner.sweep"):
        sweeper.n_trials = resume_rules.say_grid(grid, 20)  # as the sweep starts
        sweeper.run_trials(grid, GRID, [], tmp_path, storage)
    left = len(points) - len(set(earlier))
    said = [r.getMessage() for r in caplog.records if "another sampler" in r.getMessage()]
    assert len(said) == 1 and f"study test has {len(earlier)} trials" in said[0], said
    assert f"runs the {left} of its 6 points not run yet" in said[0] and "study_name=" in said[0], said
    ran = [tuple(sorted(t.params.items())) for t in grid.get_trials()]
    assert sorted(set(ran)) == sorted(tuple(sorted(p.items())) for p in points)  # every point
    new = ran[len(earlier):]
    assert len(new) == len(set(new)) == left  # once each, none run before
