"""Conditional search spaces: a parameter drawn only when another has a value (hydra.sweeper.when), in the
trials, the coarse-to-fine suggestion and a warm start."""

from __future__ import annotations

import csv

import optuna
import pytest
from omegaconf import OmegaConf

from runner.common.errors import UserError
from runner.common.study_storage import storage_for
from runner.sweep import conditions, queued, results, space, warm_start
from runner.sweep.study import TrialSeededRandomSampler
from tests.conftest import run_cli
from tests.test_sweep import load, sweep_args

ARGS = ["optimizer=choice(sgd, adamw)", "optimizer.lr=tag(log, interval(1e-4, 1e-1))",
        "optimizer.momentum=interval(0.8, 0.99)"]
WHEN = {"optimizer.momentum": {"optimizer": "sgd"}}


def conditional_space(when: dict = WHEN, args: list[str] = ARGS) -> dict:
    return conditions.conditional(space.parse(args, {})[1], when)


def quiet_study(**kwargs) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(**kwargs)


def test_momentum_is_drawn_only_in_sgd_trials():
    search = conditional_space()
    assert list(search)[:1] == ["optimizer"]  # a parent is drawn before the parameters that depend on it
    study = quiet_study(sampler=TrialSeededRandomSampler(0))
    trials = [queued.ask(study, search) for _ in range(12)]
    assert {t.params["optimizer"] for t in trials} == {"sgd", "adamw"}
    for trial in trials:
        assert ("optimizer.momentum" in trial.params) == (trial.params["optimizer"] == "sgd"), trial.params


def test_a_condition_may_name_several_values_and_several_parameters():
    search = conditional_space({"model.drop_rate": {"model": ["mlp", "convnet"], "optimizer": "sgd"}},
                               ["model=choice(linear, mlp, convnet)", "optimizer=choice(sgd, adamw)",
                                "model.drop_rate=interval(0, 0.5)"])
    assert conditions.is_active("model.drop_rate", {"model": "mlp", "optimizer": "sgd"}, search)
    assert not conditions.is_active("model.drop_rate", {"model": "mlp", "optimizer": "adamw"}, search)
    assert not conditions.is_active("model.drop_rate", {"model": "linear", "optimizer": "sgd"}, search)
    assert conditions.needs("model.drop_rate", search) == ["model=mlp", "optimizer=sgd"]  # to compose its ends


@pytest.mark.parametrize(("when", "message"), [
    ({"optimizer.momentum": {"model.width": 8}},
     r"hydra.sweeper.when: optimizer.momentum is drawn only when model.width=8, but model.width is not in the search"),
    ({"optimizer.nesterov": {"optimizer": "sgd"}},
     r"hydra.sweeper.when names optimizer.nesterov, which is not in the search space"),
    ({"optimizer.momentum": {"optimizer": "sdg"}}, r"optimizer=sdg is not one of optimizer's values"),
    ({"optimizer.momentum": "sgd"}, r"hydra.sweeper.when.optimizer.momentum is 'sgd', not a mapping"),
    ({"optimizer": {"model": "mlp"}, "model": {"optimizer": "sgd"}}, r"go round in a circle"),
    ({"optimizer.momentum": {"optimizer": []}}, r"hydra.sweeper.when.optimizer.momentum: optimizer has no values"),
    (["optimizer.momentum"], r"hydra.sweeper.when is \['optimizer.momentum'\], not a mapping of parameters"),
    ("optimizer.momentum", r"hydra.sweeper.when is 'optimizer.momentum', not a mapping of parameters"),
    ({"optimizer.momentum": {"optimizer.lr": 0.01}},
     r"hydra.sweeper.when.optimizer.momentum: optimizer.lr is not a choice .*Fix: .*optimizer.lr=choice"),
])
def test_a_bad_condition_is_refused_in_one_line(when, message):
    with pytest.raises(UserError, match=message) as refused:
        conditional_space(when, [*ARGS, "model=choice(mlp, convnet)"])
    assert "\n" not in str(refused.value) and "Fix: " in str(refused.value)


def test_an_enqueued_point_whose_condition_fails_is_named():
    search = conditional_space()
    assert conditions.check_point({"optimizer": "sgd", "optimizer.momentum": 0.9}, search) is None
    assert conditions.check_point({"optimizer": "adamw", "optimizer.momentum": 0.9}, search) == (
        "optimizer.momentum is drawn only when optimizer=sgd (the point has optimizer=adamw)")


def trial(study, params: dict, value: float, dists: dict) -> None:
    study.add_trial(optuna.trial.create_trial(params=params, distributions={k: dists[k] for k in params},
                                              value=value))


def test_coarse_to_fine_keeps_the_conditions_it_still_needs():
    search = conditional_space()
    study = quiet_study(direction="maximize")
    trial(study, {"optimizer": "sgd", "optimizer.lr": 1e-3, "optimizer.momentum": 0.9}, 0.9, search)
    trial(study, {"optimizer": "adamw", "optimizer.lr": 1e-3}, 0.8, search)
    trial(study, {"optimizer": "sgd", "optimizer.lr": 3e-3, "optimizer.momentum": 0.85}, 0.7, search)
    trial(study, {"optimizer": "adamw", "optimizer.lr": 1e-1}, 0.1, search)
    asked = []
    suggestion = results.coarse_to_fine(search, results.best_first(study)[:3], lambda *o: asked.append(o))
    assert "'optimizer.momentum=interval(0.8375, 0.9125)'" in suggestion["overrides"]
    assert "'hydra.sweeper.when={optimizer.momentum:{optimizer:[sgd]}}'" in suggestion["overrides"]
    assert ("optimizer=sgd", "optimizer.momentum=0.8375") in asked  # its ends checked with its condition
    only_adamw = results.coarse_to_fine(search, results.best_first(study)[1:2], lambda *o: None)
    assert not any("momentum" in o for o in only_adamw["overrides"])
    assert only_adamw["left_out"] == ["optimizer.momentum: drawn only when optimizer=sgd, which none of the "
                                      "top trials used"]


def test_warm_start_into_a_conditional_space(tmp_path):
    """An earlier sweep without momentum: its adamw point is known here (momentum is not drawn for it),
    its sgd point is trained again with a momentum drawn."""
    old_space = conditional_space({}, ARGS[:2])
    old = quiet_study(study_name="old", storage=storage_for(str(tmp_path / "study.journal")), direction="maximize")
    old.set_user_attr("fixed_overrides", [])
    trial(old, {"optimizer": "adamw", "optimizer.lr": 1e-3}, 0.9, old_space)
    trial(old, {"optimizer": "sgd", "optimizer.lr": 1e-2}, 0.8, old_space)
    search = conditional_space()
    train, known = warm_start.known_points(str(tmp_path), 2, None, [], search, (["value"], ["maximize"]))
    assert [k.point for k in known] == [{"optimizer": "adamw", "optimizer.lr": 1e-3}]
    assert train == [{"optimizer": "sgd", "optimizer.lr": 1e-2}]
    new = quiet_study(direction="maximize", sampler=TrialSeededRandomSampler(0))
    warm_start.copy_known_points(new, known, search, "warm start")
    new.enqueue_trial(train[0])
    drawn = queued.ask(new, search)
    assert drawn.params["optimizer"] == "sgd" and 0.8 <= drawn.params["optimizer.momentum"] <= 0.99
    assert new.trials[0].params == {"optimizer": "adamw", "optimizer.lr": 1e-3}


@pytest.mark.slow
def test_a_conditional_sweep_passes_momentum_only_to_sgd_runs(workdir):
    sweep_dir = workdir / "sweep"
    result = run_cli(sweep_args(sweep_dir, *ARGS, "hydra.sweeper.n_trials=2",
                                "hydra.sweeper.when={optimizer.momentum:{optimizer:sgd}}",
                                "hydra.sweeper.enqueue=[{optimizer:sgd},{optimizer:adamw}]"), cwd=workdir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    study = load(sweep_dir)
    with open(sweep_dir / "trials.csv") as file:
        rows = {row["optimizer"]: row for row in csv.DictReader(file)}
    assert rows["adamw"]["optimizer.momentum"] == "" and 0.8 <= float(rows["sgd"]["optimizer.momentum"]) <= 0.99
    for t in study.trials:
        config = OmegaConf.load(sweep_dir / t.system_attrs["runner:run_dir"] / ".hydra" / "config.yaml")
        assert config.optimizer._target_.endswith("SGD" if t.params["optimizer"] == "sgd" else "AdamW")
        if t.params["optimizer"] == "sgd":
            assert config.optimizer.momentum == t.params["optimizer.momentum"]
        else:
            assert "momentum" not in config.optimizer and "optimizer.momentum" not in t.params


def test_a_trial_whose_config_does_not_compose_fails_with_its_reason_and_the_others_run():
    from hydra_plugins.runner_sweeper.runner_sweeper import RunnerOptunaSweeper

    sweeper = RunnerOptunaSweeper.__new__(RunnerOptunaSweeper)  # only its composition check, stubbed
    why = "Could not override 'optimizer.momentum': adamw has no momentum"
    sweeper.config_loader = object()  # set up by Hydra
    sweeper.refusal = lambda overrides: why if "optimizer=adamw" in overrides else None
    search = space.parse(ARGS, {})[1]
    study = quiet_study()
    for name in ("sgd", "adamw"):
        study.enqueue_trial({"optimizer": name, "optimizer.lr": 1e-3, "optimizer.momentum": 0.9})
    trials = [study.ask(search), study.ask(search)]
    kept = sweeper.composable(study, trials, ["+experiment=smoke"])
    assert [t.params["optimizer"] for t in kept] == ["sgd"]
    failed = study.trials[1]
    assert failed.state == optuna.trial.TrialState.FAIL and why in failed.user_attrs["fail_reason"]
    assert study.trials[0].state == optuna.trial.TrialState.RUNNING  # launched as usual
