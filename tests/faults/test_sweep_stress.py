"""Sweep workers under kills: 3 workers x 12 trials on the journal and on a real PostgreSQL, workers
SIGKILLed at seeded random moments (starting, asking, training, telling, reporting) and restarted,
then the same command once more after the grace period, as a user would.

Afterwards: exactly n_trials trials count, all COMPLETE (the tiny runs cannot fail for a real reason,
and a killed worker's trial is failed as lost and retried in the same folder), no parameter point
trained to the end twice, every run folder's finished run recorded COMPLETE with its own value, and
trials.csv equals the study.
"""

from __future__ import annotations

import csv
import json
import random
import signal
import subprocess
import sys
import time

import optuna
import pytest

from runner.common.study_storage import storage_for
from tests.conftest import cli_env, run_cli
from tests.test_sweep import LR, TINY_SWEEP

pytestmark = [pytest.mark.slow, pytest.mark.faults]
N_TRIALS, WORKERS, KILLS = 12, 3, 5
GRACE = 4.0


def stress(workdir, storage: str | None, seed: int) -> optuna.Study:
    sweep_dir = workdir / "sweep"
    args = [*TINY_SWEEP, LR, "model.channels=choice(2,4,8)", f"hydra.sweeper.sweep_dir={sweep_dir}",
            "hydra.sweeper.study_name=stress", f"hydra.sweeper.n_trials={N_TRIALS}", "hydra.sweeper.max_retries=10",
            "hydra.sweeper.heartbeat_seconds=0.5", f"hydra.sweeper.grace_seconds={GRACE}",
            *([f"hydra.sweeper.storage={storage}"] if storage else [])]

    def start() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=workdir, env=cli_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    rng = random.Random(seed)
    workers = [start() for _ in range(WORKERS)]
    for _ in range(KILLS):
        time.sleep(rng.uniform(1.0, 6.0))
        victim = rng.randrange(WORKERS)
        workers[victim].send_signal(signal.SIGKILL)
        workers[victim].wait()
        workers[victim] = start()
    for worker in workers:
        worker.wait(timeout=600)
    time.sleep(GRACE + 1)  # the killed workers' last trials are now lost: the rerun retries them
    rerun = run_cli(args, cwd=workdir, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    return optuna.load_study(study_name="stress", storage=storage_for(storage or str(sweep_dir / "study.journal")))


def assert_consistent(study: optuna.Study, sweep_dir) -> None:
    trials = study.get_trials(deepcopy=False)
    counted = [t for t in trials if not t.system_attrs.get("runner:retried")]
    assert len(counted) == N_TRIALS, [(t.number, t.state.name) for t in trials]
    assert {t.state.name for t in counted} == {"COMPLETE"}, [(t.number, t.state.name, t.system_attrs) for t in counted]
    finished_points = [tuple(sorted(t.params.items())) for t in counted]
    assert len(set(finished_points)) == len(finished_points)  # no point trained to the end twice
    assert all(t.system_attrs["runner:fail_reason"].startswith("worker lost") for t in trials if t.state.name == "FAIL")
    # a retry continues in the lost one's folder; a worker killed between asking and naming the folder
    # leaves a FAIL trial with none (its retry gets a folder of its own)
    assert all(t.state.name == "FAIL" for t in trials if "runner:run_dir" not in t.system_attrs)
    last_in_folder = {t.system_attrs["runner:run_dir"]: t for t in trials if "runner:run_dir" in t.system_attrs}
    for run_dir, trial in last_in_folder.items():  # no finished run recorded FAIL, and each value is its run's
        record = json.loads((sweep_dir / run_dir / "run.json").read_text())
        best = json.loads((sweep_dir / run_dir / "eval" / "best.json").read_text())
        assert record["status"] == "finished" and trial.state.name == "COMPLETE" and trial.value == best["value"]
    with open(sweep_dir / "trials.csv") as file:
        rows = list(csv.DictReader(file))
    assert [(int(r["number"]), r["state"]) for r in rows] == [(t.number, t.state.name) for t in trials]
    assert [float(r["value"]) for r in rows if r["state"] == "COMPLETE"] == [t.value for t in trials
                                                                             if t.state.name == "COMPLETE"]


def test_killed_and_restarted_workers_on_the_journal(workdir):
    assert_consistent(stress(workdir, None, seed=1), workdir / "sweep")


def test_killed_and_restarted_workers_on_postgresql(workdir, fresh_postgres_url):
    assert_consistent(stress(workdir, fresh_postgres_url, seed=2), workdir / "sweep")
