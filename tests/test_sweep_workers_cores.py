"""Sweep workers on one machine share its cores, and the last one out draws the plots.

Each worker registers in the sweep folder (.workers/, an entry its process holds locked); a trial's
process takes its share of the machine's cores (the affinity mask divided by the trial processes of
live workers on this host); under SLURM the task's CPUs already are its share.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from runner.common import runtime
from runner.sweep import workers
from tests.conftest import cli_env, run_cli
from tests.test_sweep import LR, sweep_args


@pytest.mark.parametrize(("environment", "cores"), [
    ({}, 8),
    ({"RUNNER_WORKERS_ON_HOST": "3"}, 2),  # three trial processes of local sweep workers: 8 // 3
    ({"RUNNER_WORKERS_ON_HOST": "16"}, 1),  # never none
    ({"RUNNER_WORKERS_ON_HOST": "2", "LOCAL_WORLD_SIZE": "2"}, 2),  # and torchrun's processes in each
    ({"RUNNER_WORKERS_ON_HOST": "3", "SLURM_CPUS_PER_TASK": "4"}, 4),  # SLURM's per-task count is the share
    ({"RUNNER_WORKERS_ON_HOST": "many"}, 8),  # not a count: not shared
])
def test_a_trial_takes_its_share_of_the_cores(monkeypatch, environment, cores):
    for key in ("RUNNER_WORKERS_ON_HOST", "SLURM_CPUS_PER_TASK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert runtime.available_cores() == cores


HOLD = """
import sys, time
from pathlib import Path
from runner.sweep import workers
with workers.registered(Path(sys.argv[1]), processes=2, heartbeat_seconds=60):
    print("registered", flush=True)
    time.sleep(600)
"""


def test_live_workers_are_counted_and_a_killed_ones_entry_is_not(tmp_path):
    with workers.registered(tmp_path, processes=1, heartbeat_seconds=60) as me:
        other = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], env=cli_env(), stdout=subprocess.PIPE,
                                 text=True)
        assert other.stdout.readline().strip() == "registered"
        assert workers.sharing(tmp_path) == 3 and me.others(grace_seconds=60) == 1
        other.send_signal(signal.SIGKILL)
        other.wait()
        assert workers.sharing(tmp_path) == 1 and me.others(grace_seconds=60) == 0
        assert len(list((tmp_path / ".workers").iterdir())) == 1  # the killed worker's entry is gone
    assert not (tmp_path / ".workers").exists()  # the last one out leaves no registry behind


def threads_of(run_dir) -> int:
    return json.loads((run_dir / "run.json").read_text())["environment"]["torch_threads"]


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: nothing to share")
def test_a_worker_beside_another_takes_half_the_cores_and_leaves_the_plots_to_the_last_one(workdir):
    sweep_dir = workdir / "sweep"
    args = sweep_args(sweep_dir, LR, "hydra.sweeper.n_trials=1")
    environment = {k: v for k, v in cli_env().items() if k not in ("SLURM_CPUS_PER_TASK", "RUNNER_WORKERS_ON_HOST")}
    with workers.registered(sweep_dir, processes=1, heartbeat_seconds=60):  # another worker of the sweep, here
        result = subprocess.run([sys.executable, "-m", "runner", *args], cwd=workdir, env=environment,
                                capture_output=True, text=True, timeout=300)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-3000:]
        assert threads_of(sweep_dir / "trial_0000") == max(1, len(os.sched_getaffinity(0)) // 2), output[-3000:]
        said = [line for line in output.splitlines() if "share this machine's" in line]
        assert len(said) == 1 and "2 trial processes" in said[0], output[-3000:]
        assert (sweep_dir / "trials.csv").is_file() and (sweep_dir / "optimization_results.yaml").is_file()
        assert not list(sweep_dir.glob("*.png")), "a worker that is not the last one out drew the plots"
        assert "plots" in output and "last worker" in output
    again = run_cli(args, cwd=workdir)  # now the only worker: the last one out draws them
    assert again.returncode == 0, again.stdout[-3000:]
    assert (sweep_dir / "optimization_history.png").is_file()


def test_a_sweep_folder_that_cannot_be_written_is_one_line(tmp_path):
    from runner.common.errors import UserError

    (tmp_path / "file").write_text("")
    refused = r"the sweep folder .*file/sweep cannot be written .*Fix: hydra.sweeper.sweep_dir="
    with pytest.raises(UserError, match=refused), workers.registered(tmp_path / "file" / "sweep", 1, 60):
        pass
