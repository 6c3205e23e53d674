"""The runner_optuna sweeper, through the real command on a tiny experiment."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from runner.common.study_storage import storage_for
from runner.sweep import space
from runner.sweep.objectives import study_direction
from runner.sweep.study import TrialSeededRandomSampler
from tests.conftest import cli_env, run_cli

TINY_SWEEP = [
    "-m", "+experiment=smoke", "hydra/sweeper=runner_optuna", "evaluate.galleries=false",
    "dataset.train_size=64", "trainer.batch_size=16", "trainer.micro_batch_size=16", "model.channels=4",
]
LR = "optimizer.lr=tag(log, interval(1e-4, 1e-1))"


def sweep_args(sweep_dir: Path, *extra: str) -> list[str]:
    return [*TINY_SWEEP, f"hydra.sweeper.sweep_dir={sweep_dir}", "hydra.sweeper.study_name=test", *extra]


def load(sweep_dir: Path, storage: str | None = None) -> optuna.Study:
    return optuna.load_study(study_name="test", storage=storage_for(storage or str(sweep_dir / "study.journal")))


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials()]


@pytest.mark.slow
def test_random_sweep_with_two_jobs_then_resume_to_six(workdir):
    sweep_dir = workdir / "sweep"
    result = run_cli(sweep_args(sweep_dir, LR, "model.channels=choice(4,8)", "hydra.sweeper.n_trials=4",
                                "hydra.sweeper.n_jobs=2"), cwd=workdir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    study = load(sweep_dir)
    assert states(study) == ["COMPLETE"] * 4
    for trial in study.trials:
        run_dir = sweep_dir / trial.system_attrs["runner:run_dir"]
        best = json.loads((run_dir / "eval" / "best.json").read_text())
        assert trial.value == best["value"]  # the objective is the evaluator's best validation metric
        record = json.loads((run_dir / "run.json").read_text())
        assert record["sweep"] == {"study": "test", "trial": trial.number, "params": trial.params}
    with open(sweep_dir / "trials.csv") as file:
        rows = list(csv.DictReader(file))
    assert [int(r["number"]) for r in rows] == [0, 1, 2, 3] and {r["state"] for r in rows} == {"COMPLETE"}
    results = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert results.best_value == max(t.value for t in study.trials)
    assert f"optimizer.lr={results.best_params['optimizer.lr']!r}" in results.reproduce
    assert any(o.startswith("'optimizer.lr=tag(log, interval(") for o in results.coarse_to_fine.overrides)
    for plot in ("optimization_history.png", "slice.png"):
        assert (sweep_dir / plot).is_file()
    assert "coarse to fine, next sweep: 'optimizer.lr=tag(log, interval(" in result.stdout
    first_params = [t.params for t in study.trials]

    resumed = run_cli(sweep_args(sweep_dir, LR, "model.channels=choice(4,8)", "hydra.sweeper.n_trials=6",
                                 "hydra.sweeper.n_jobs=2"), cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = load(sweep_dir)
    assert [t.number for t in after.trials] == [0, 1, 2, 3, 4, 5]  # exactly 2 more, numbering continues
    assert [t.params for t in after.trials[:4]] == first_params  # none repeated or redrawn


def test_the_same_seed_gives_the_same_parameters_and_trials_differ():
    def draw(seed: int, order: list[int]) -> dict[int, float]:
        study = optuna.create_study(sampler=TrialSeededRandomSampler(seed))
        space_ = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
        trials = {t.number: t for t in (study.ask(space_) for _ in range(4))}
        return {n: trials[n].params["lr"] for n in order}

    first, again = draw(0, [0, 1, 2, 3]), draw(0, [3, 2, 1, 0])
    assert first == again
    assert len(set(first.values())) == 4  # no two trials draw the same point
    assert draw(1, [0, 1, 2, 3]) != first


def test_search_space_grammar():
    fixed, parsed = space.parse(
        ["optimizer.lr=tag(log, interval(1e-4, 1e-1))", "model.channels=int(interval(8, 64))",
         "trainer.batch_size=range(32, 257, 32)", "model=choice(convnet, resnet18)", "trainer.epochs=3"],
        {"optimizer.weight_decay": "interval(0, 1e-3)", "model.channels": "choice(1, 2)"},
    )
    assert fixed == ["trainer.epochs=3"]
    assert parsed["optimizer.lr"] == optuna.distributions.FloatDistribution(1e-4, 0.1, log=True)
    assert parsed["model.channels"] == optuna.distributions.IntDistribution(8, 64)  # the command line wins
    assert parsed["trainer.batch_size"] == optuna.distributions.IntDistribution(32, 256, step=32)
    assert parsed["model"] == optuna.distributions.CategoricalDistribution(["convnet", "resnet18"])
    assert parsed["optimizer.weight_decay"] == optuna.distributions.FloatDistribution(0.0, 1e-3)


def test_coarse_to_fine_narrows_around_the_top_trials():
    dists = {"lr": optuna.distributions.FloatDistribution(1e-5, 1.0, log=True),
             "model": optuna.distributions.CategoricalDistribution(["a", "b", "c"])}
    suggestion = space.narrowed(dists, [{"lr": 1e-3, "model": "a"}, {"lr": 1e-2, "model": "c"}])
    assert suggestion["model"] == "choice(a, c)"
    low, high = (float(x) for x in suggestion["lr"].removeprefix("tag(log, interval(").removesuffix("))").split(","))
    assert 1e-4 < low < 1e-3 and 1e-2 < high < 1e-1


def test_the_study_optimizes_the_way_the_evaluator_picks_its_best():
    assert study_direction("auto", "top1") == "maximize"
    assert study_direction("auto", "loss") == "minimize" and study_direction("auto", "ece") == "minimize"
    assert study_direction("auto", "top1", "min") == "minimize"  # evaluate.direction=min
    assert study_direction("minimize", "top1") == "minimize"  # hydra.sweeper.direction wins


def test_a_nan_objective_and_a_raising_trial_are_fail_with_their_reason(tmp_path):
    from hydra_plugins.runner_sweeper.runner_sweeper import RunnerOptunaSweeper

    sweeper = RunnerOptunaSweeper(max_failure_rate=1.0, n_trials=2)
    sweeper.config = OmegaConf.create({"evaluate": {"metric": "top1", "direction": "auto"}})
    study = optuna.create_study(storage=storage_for(str(tmp_path / "s.journal")), direction="maximize")
    nan_trial, raising_trial = study.ask(), study.ask()
    sweeper.tell(study, nan_trial, [JobReturn(status=JobStatus.COMPLETED, _return_value=float("nan"))], 1.0)
    sweeper.tell(study, raising_trial, [JobReturn(status=JobStatus.FAILED, _return_value=MemoryError("out of memory"))],
                 1.0)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    assert "nan" in trials[0].system_attrs["runner:fail_reason"]
    assert trials[1].system_attrs["runner:fail_reason"] == "MemoryError: out of memory"


@pytest.mark.slow
def test_failing_trials_are_recorded_and_the_sweep_goes_on(workdir):
    """lr=1e30 diverges: those trials stop with the divergence named (a UserError)."""
    sweep_dir = workdir / "sweep"
    result = run_cli(sweep_args(sweep_dir, "optimizer.lr=choice(3e-3,1e30)", "hydra.sweeper.n_trials=4",
                                "hydra.sweeper.seed=3"), cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = load(sweep_dir).trials
    by_state = {t.params["optimizer.lr"]: t.state.name for t in trials}
    assert by_state == {3e-3: "COMPLETE", 1e30: "FAIL"}, [(t.params, t.state) for t in trials]
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert all("became non-finite" in t.system_attrs["runner:fail_reason"] for t in failed), failed[0].system_attrs


@pytest.mark.slow
def test_a_killed_workers_trial_is_retried_and_resumes_its_run(workdir):
    sweep_dir = workdir / "sweep"
    args = sweep_args(sweep_dir, LR, "dataset.train_size=2000", "trainer.epochs=3", "hydra.sweeper.n_trials=2",
                      "hydra.sweeper.heartbeat_seconds=0.5", "hydra.sweeper.grace_seconds=2")
    worker = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=workdir, env=cli_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_checkpoint = sweep_dir / "trial_0000" / "checkpoints" / "epoch-0001.pt"
    deadline = time.monotonic() + 120
    while not first_checkpoint.exists() and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.02)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert first_checkpoint.exists()
    assert states(load(sweep_dir)) == ["RUNNING"]
    time.sleep(2.5)  # past the grace period: the trial's heartbeat has stopped

    result = run_cli(args, cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = load(sweep_dir).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert trials[0].system_attrs["runner:fail_reason"].startswith("worker lost")
    assert trials[1].params == trials[0].params and trials[1].user_attrs["retry_of"] == 0
    assert trials[1].system_attrs["runner:run_dir"] == "trial_0000"  # resumed where the lost trial stopped
    assert "resuming from" in (sweep_dir / "trial_0000" / "train.log").read_text()


@pytest.mark.slow
def test_the_median_pruner_stops_a_bad_trial_before_its_last_epoch(workdir):
    sweep_dir = workdir / "sweep"
    study = optuna.create_study(study_name="test", storage=storage_for(str(sweep_dir / "study.journal")),
                                direction="maximize")
    for _ in range(2):  # two good trials that reached 100% validation accuracy at every epoch
        study.add_trial(optuna.trial.create_trial(value=1.0, intermediate_values={1: 1.0, 2: 1.0, 3: 1.0}))
    result = run_cli(sweep_args(sweep_dir, "optimizer.lr=choice(1e-9)", "trainer.epochs=3",
                                "hydra.sweeper.n_trials=3", "hydra.sweeper.pruner=median"), cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    trial = load(sweep_dir).trials[2]
    assert trial.state.name == "PRUNED" and list(trial.intermediate_values) == [1]
    run_dir = sweep_dir / trial.system_attrs["runner:run_dir"]
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["epoch-0001.pt"]
    assert json.loads((run_dir / "run.json").read_text())["status"].startswith("pruned")


@pytest.mark.slow
def test_two_workers_share_one_journal_without_losing_or_duplicating_trials(workdir):
    sweep_dir = workdir / "sweep"
    args = [sys.executable, "-m", "runner", *sweep_args(sweep_dir, LR, "hydra.sweeper.n_trials=6")]
    workers = [subprocess.Popen(args, cwd=workdir, env=cli_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-3000:]
    trials = load(sweep_dir).trials
    assert [t.number for t in trials] == list(range(6)) and states(load(sweep_dir)) == ["COMPLETE"] * 6
    assert len({t.params["optimizer.lr"] for t in trials}) == 6  # no point drawn twice
    pids = set()
    for trial in trials:
        run_dir = sweep_dir / trial.system_attrs["runner:run_dir"]
        assert (run_dir / "train.log").read_text().count("loss at init") == 1  # each trial trained exactly once
        pids.add(json.loads((run_dir / "run.json").read_text())["environment"]["pid"])
    assert len(pids) == 2  # both workers ran trials


@pytest.mark.slow
def test_postgresql_storage(workdir, postgres_url):
    import sqlalchemy

    name = f"test-{os.getpid()}-{time.time_ns()}"
    result = run_cli([*TINY_SWEEP, LR, f"hydra.sweeper.storage={postgres_url}", f"hydra.sweeper.study_name={name}",
                      f"hydra.sweeper.sweep_dir={workdir / 'sweep'}", "hydra.sweeper.n_trials=2"], cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name=name, storage=postgres_url)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert sqlalchemy.make_url(postgres_url).get_backend_name() == "postgresql"


@pytest.mark.slow
def test_optuna_dashboard_opens_the_journal(workdir):
    sweep_dir = workdir / "sweep"
    assert run_cli(sweep_args(sweep_dir, LR, "hydra.sweeper.n_trials=1"), cwd=workdir).returncode == 0
    dashboard = shutil.which("optuna-dashboard")
    if dashboard is None:
        pytest.skip("optuna-dashboard is not installed (pip install -e '.[dev]' installs it)")
    port = 18000 + os.getpid() % 1000
    server = subprocess.Popen([dashboard, str(sweep_dir / "study.journal"), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=1) as response:
                    studies = json.load(response)["study_summaries"]
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("optuna-dashboard did not answer")
    finally:
        server.terminate()
        server.wait()
    assert [s["study_name"] for s in studies] == ["test"]
