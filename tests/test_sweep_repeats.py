"""Noise-aware sweeps: hydra.sweeper.repeats=N trains each point with N seeds (one trial, its objective their
mean), trials.csv shows the spread, and coarse to fine does not narrow around a best trial that cannot be
told from the runner-up."""

from __future__ import annotations

import csv
import json
import statistics

import optuna
import pytest
from omegaconf import OmegaConf

from runner.common.errors import UserError
from runner.sweep import repeats, results
from tests.conftest import run_cli
from tests.test_sweep import LR, load, sweep_args

SPACE = {"optimizer.lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}


@pytest.mark.parametrize(("setting", "message"), [
    ({"repeats": 0}, r"hydra.sweeper.repeats=0 .*Fix: 1 .*or more"),
    ({"search": {"trainer.seed": optuna.distributions.IntDistribution(0, 9)}},
     r"hydra.sweeper.repeats=3 sets trainer.seed itself, and the search space sweeps it. Fix"),
    ({"objectives": ["top1", "parameters"]}, r"hydra.sweeper.repeats=3 averages one objective.*Fix"),
])
def test_settings_repeats_cannot_keep_are_refused_in_one_line(setting, message):
    given = {"repeats": 3, "search": SPACE, "objectives": ["top1"], **setting}
    with pytest.raises(UserError, match=message) as refused:
        repeats.refuse(given["repeats"], given["search"], given["objectives"])
    assert "\n" not in str(refused.value)


def test_each_seed_has_its_own_run_folder_and_seed():
    assert repeats.jobs("trial_0003", base_seed=5, count=1) == [("trial_0003", [])]
    assert repeats.jobs("trial_0003", base_seed=5, count=2) == [("trial_0003/seed_5", ["trainer.seed=5"]),
                                                                 ("trial_0003/seed_6", ["trainer.seed=6"])]


def noisy_study(values_by_lr: dict[float, list[float]]) -> optuna.Study:
    """A study of one trial per lr, each with its seeds' values, recorded as a repeats sweep records them."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for lr, values in values_by_lr.items():
        study.enqueue_trial({"optimizer.lr": lr})
        trial = study.ask(SPACE)
        study.tell(trial, repeats.record(study, trial, list(range(len(values))), values))
    return study


def test_the_objective_is_the_mean_and_the_spread_is_kept(tmp_path):
    study = noisy_study({1e-3: [0.5, 0.6, 0.7]})
    trial = study.trials[0]
    assert trial.value == pytest.approx(0.6)
    assert trial.user_attrs["seed_values"] == {"0": 0.5, "1": 0.6, "2": 0.7}
    assert trial.user_attrs["std"] == pytest.approx(0.1) and trial.user_attrs["n"] == 3
    half = 4.302652729911275 * 0.1 / 3 ** 0.5  # t(0.975, 2) s / sqrt(n), by hand
    assert trial.user_attrs["ci95"] == pytest.approx([0.6 - half, 0.6 + half])
    results.write_trials_csv(study, tmp_path)
    with open(tmp_path / "trials.csv") as file:
        row = next(csv.DictReader(file))
    assert float(row["value"]) == pytest.approx(0.6) and float(row["std"]) == pytest.approx(0.1) and row["n"] == "3"


def test_coarse_to_fine_does_not_narrow_around_a_best_trial_inside_the_noise(tmp_path):
    apart = {1e-2: [0.90, 0.91, 0.92], 1e-3: [0.50, 0.51, 0.52], 3e-3: [0.40, 0.41, 0.42], 1e-4: [0.1, 0.11, 0.12],
             3e-4: [0.1, 0.1, 0.1]}
    clear = results.write_best(noisy_study(apart), tmp_path, [], SPACE)["coarse_to_fine"]
    assert clear["from_top_trials"] == [0, 1, 2] and "noise" not in clear
    close = {**apart, 1e-4: [0.05, 0.35, 0.75]}  # 4th by its mean, as good as the best within its seeds' noise
    noisy = results.write_best(noisy_study(close), tmp_path, [], SPACE)["coarse_to_fine"]
    assert sorted(noisy["from_top_trials"]) == [0, 1, 2, 3]
    assert noisy["noise"].startswith("the best trial (0: 0.91 +- 0.025, n=3) cannot be told from trial 3 "
                                     "(0.38 +- 0.87) within their 95% intervals: the next ranges span them too")


@pytest.mark.slow
def test_two_seeds_per_trial_the_objective_is_their_mean(workdir):
    sweep_dir = workdir / "sweep"
    result = run_cli(sweep_args(sweep_dir, LR, "hydra.sweeper.n_trials=2", "hydra.sweeper.repeats=2",
                                "hydra.sweeper.pruner=median"), cwd=workdir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "hydra.sweeper.repeats=2: pruning is off" in result.stdout + result.stderr
    study = load(sweep_dir)
    with open(sweep_dir / "trials.csv") as file:
        rows = list(csv.DictReader(file))
    for trial, row in zip(study.trials, rows, strict=True):
        folder = sweep_dir / trial.system_attrs["runner:run_dir"]
        values = []
        for seed in (0, 1):
            run_dir = folder / f"seed_{seed}"
            assert OmegaConf.load(run_dir / ".hydra" / "config.yaml").trainer.seed == seed
            values.append(json.loads((run_dir / "eval" / "best.json").read_text())["value"])
        assert trial.value == pytest.approx(sum(values) / 2)  # the objective, by hand
        assert float(row["value"]) == pytest.approx(sum(values) / 2) and row["n"] == "2"
        assert float(row["std"]) == pytest.approx(statistics.stdev(values))


def test_a_resumed_study_keeps_its_repeats_and_refuses_another_in_one_line():
    from runner.sweep import resume_rules

    old = noisy_study({1e-3: [0.5, 0.6]})  # a study of repeats=2 from before the record: its trials show n=2
    for asked in (1, 3):
        with pytest.raises(UserError, match=rf"repeats=2 seeds, and this command asks repeats={asked}.*Fix: "
                                            r"hydra.sweeper.repeats=2 .*study_name=NEW_NAME") as refused:
            resume_rules.keep_repeats(old, asked, "here")
        assert "\n" not in str(refused.value)
    resume_rules.keep_repeats(old, 2, "here")  # the same: resumed, and recorded
    assert old.user_attrs["repeats"] == 2
    new = optuna.create_study()
    resume_rules.keep_repeats(new, 2, "here")
    assert new.user_attrs["repeats"] == 2
    with pytest.raises(UserError, match="repeats=2 seeds, and this command asks repeats=1"):
        resume_rules.keep_repeats(new, 1, "here")  # recorded before any trial finished
    single = optuna.create_study()
    single.add_trial(optuna.trial.create_trial(params={"optimizer.lr": 1e-3}, distributions=SPACE, value=0.5))
    with pytest.raises(UserError, match="repeats=1 seed, and this command asks repeats=2"):
        resume_rules.keep_repeats(single, 2, "here")


def test_a_warm_start_copies_the_spread_and_takes_values_only_of_the_same_repeats(tmp_path, caplog):
    from runner.common.study_storage import storage_for
    from runner.sweep import resume_rules, warm_start

    old = optuna.create_study(study_name="old", storage=storage_for(str(tmp_path / "study.journal")),
                              direction="maximize")
    resume_rules.keep_repeats(old, 2, "here")
    old.set_user_attr("fixed_overrides", [])
    old.enqueue_trial({"optimizer.lr": 1e-3})
    trial = old.ask(SPACE)
    old.tell(trial, repeats.record(old, trial, [0, 1], [0.5, 0.7]))
    objective = (["value"], ["maximize"])
    train, known = warm_start.known_points(str(tmp_path), 1, None, [], SPACE, objective, 2)
    assert train == [] and len(known) == 1
    new = optuna.create_study(direction="maximize")
    warm_start.copy_known_points(new, known, SPACE, "warm start")
    copied = new.trials[0]
    assert copied.value == pytest.approx(0.6) and copied.user_attrs["n"] == 2
    assert copied.user_attrs["std"] == pytest.approx(old.trials[0].user_attrs["std"])
    assert copied.user_attrs["ci95"] == pytest.approx(old.trials[0].user_attrs["ci95"])
    train, known = warm_start.known_points(str(tmp_path), 1, None, [], SPACE, objective, 1)  # another repeats
    assert known == [] and train == [{"optimizer.lr": 1e-3}]
    assert any("repeats=2 (here 1)" in r.getMessage() for r in caplog.records)


def test_the_best_of_a_repeats_sweep_is_reproduced_with_each_of_its_seeds(tmp_path):
    best = results.write_best(noisy_study({1e-3: [0.5, 0.6, 0.7], 1e-2: [0.1, 0.1, 0.2]}), tmp_path,
                              ["+experiment=smoke", "trainer.seed=0"], SPACE)
    assert best["reproduce"] == ("for seed in 0 1 2; do python -m runner +experiment=smoke optimizer.lr=0.001 "
                                 "trainer.seed=$seed; done")
    assert OmegaConf.load(tmp_path / "optimization_results.yaml").reproduce == best["reproduce"]
