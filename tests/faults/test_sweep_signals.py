"""A stop signal reaching a sweep worker between trials (SLURM's USR1 before a time limit, SIGTERM, Ctrl-C):
the worker starts no other trial, writes its reports, requeues itself under SLURM (exit 0) or else exits
75 (130 for Ctrl-C) in one line, and leaves no trial RUNNING; the same command goes on to n_trials.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from hydra_plugins.runner_sweeper import runner_sweeper
from runner.common import stop_signals
from tests.conftest import cli_env, run_cli
from tests.test_sweep import LR, load, sweep_args
from tests.test_sweep_seams import SEARCH, sweeper_on

pytestmark = pytest.mark.faults


class SignalledLauncher:
    """Hydra's launcher in this process: every job completes with 0.5, and `signal_name` arrives after job `at`."""

    def __init__(self, signal_name: str, at: int):
        self.jobs, self.signal_name, self.at = [], signal_name, at

    def launch(self, batch, initial_job_idx):
        from hydra.core.utils import JobReturn, JobStatus

        self.jobs += batch
        if len(self.jobs) >= self.at:
            stop_signals._request.received = self.signal_name
        return [JobReturn(status=JobStatus.COMPLETED, _return_value=0.5) for _ in batch]


@pytest.fixture
def no_signal_yet(monkeypatch):
    monkeypatch.setattr(stop_signals._request, "received", None)


@pytest.mark.parametrize(("signal_name", "requeued", "code"), [("SIGUSR1", False, 75), ("SIGTERM", True, 0),
                                                               ("SIGINT", False, 130)])
def test_a_signal_between_trials_stops_the_worker_before_its_next_trial(tmp_path, monkeypatch, caplog, no_signal_yet,
                                                                       signal_name, requeued, code):
    sweeper, the_study, storage = sweeper_on(tmp_path, n_trials=4)
    sweeper.launcher = SignalledLauncher(signal_name, at=1)
    asked = []
    monkeypatch.setattr(stop_signals, "requeue_slurm_job", lambda: asked.append(True) or requeued)
    with caplog.at_level(logging.WARNING, logger="runner.sweep"):
        sweeper.run_trials(the_study, SEARCH, [], tmp_path, storage)
        with pytest.raises(SystemExit) as stopped:
            sweeper.exit_if_stopped()
    assert stopped.value.code == code
    assert len(sweeper.launcher.jobs) == 1 and [t.state.name for t in the_study.get_trials()] == ["COMPLETE"]
    assert asked == ([] if signal_name == "SIGINT" else [True])  # Ctrl-C is the user's: no requeue
    said = [r.getMessage() for r in caplog.records if "between trials" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0] and ("requeued" in said[0]) == requeued, said


def test_a_signal_after_the_last_trial_stops_nothing(tmp_path, monkeypatch, no_signal_yet):
    """The sweep is done: the worker ends as it would have (exit 0), and is not requeued to do nothing."""
    sweeper, the_study, storage = sweeper_on(tmp_path, n_trials=2)
    sweeper.launcher = SignalledLauncher("SIGUSR1", at=2)
    monkeypatch.setattr(stop_signals, "requeue_slurm_job", lambda: pytest.fail("requeued a finished sweep"))
    sweeper.run_trials(the_study, SEARCH, [], tmp_path, storage)
    sweeper.exit_if_stopped()  # no SystemExit
    assert [t.state.name for t in the_study.get_trials()] == ["COMPLETE", "COMPLETE"]


def test_a_signal_before_the_first_trial_starts_none(tmp_path, monkeypatch, no_signal_yet):
    sweeper, the_study, storage = sweeper_on(tmp_path, n_trials=2)
    monkeypatch.setattr(stop_signals._request, "received", "SIGUSR1")
    monkeypatch.setattr(stop_signals, "requeue_slurm_job", lambda: False)
    sweeper.run_trials(the_study, SEARCH, [], tmp_path, storage)
    assert sweeper.launcher.jobs == [] and the_study.get_trials() == []
    with pytest.raises(SystemExit) as stopped:
        sweeper.exit_if_stopped()
    assert stopped.value.code == runner_sweeper.EXIT_STOPPED


def test_a_trial_stopped_and_requeued_by_its_own_job_is_not_requeued_twice(tmp_path, monkeypatch, no_signal_yet):
    from hydra.core.utils import JobReturn, JobStatus

    sweeper, the_study, storage = sweeper_on(tmp_path, n_trials=2)
    preempted = stop_signals.Preempted("SIGUSR1", "checkpoints/epoch-0001.pt", 4)
    preempted.requeued = True  # the trial's job asked SLURM already (runner/training/job.py)

    class PreemptedLauncher:
        jobs: list = []

        def launch(self, batch, initial_job_idx):
            stop_signals._request.received = "SIGUSR1"
            self.jobs += batch
            return [JobReturn(status=JobStatus.FAILED, _return_value=preempted) for _ in batch]

    sweeper.launcher = PreemptedLauncher()
    monkeypatch.setattr(stop_signals, "requeue_slurm_job", lambda: pytest.fail("requeued a second time"))
    sweeper.run_trials(the_study, SEARCH, [], tmp_path, storage)
    with pytest.raises(SystemExit) as stopped:
        sweeper.exit_if_stopped()
    assert stopped.value.code == 0
    assert [t.state.name for t in the_study.get_trials()] == ["FAIL", "WAITING"]  # queued again, to resume


def finished(run_json) -> bool:
    try:
        return json.loads(run_json.read_text()).get("status") == "finished"
    except (OSError, ValueError):
        return False


@pytest.mark.slow
def test_usr1_right_after_a_trial_finished_stops_the_worker_and_the_same_command_goes_on(workdir):
    sweep_dir = workdir / "sweep"
    args = sweep_args(sweep_dir, LR, "hydra.sweeper.n_trials=3")
    environment = {k: v for k, v in cli_env().items() if not k.startswith("SLURM_")}  # never requeue a CI job
    worker = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=workdir, env=environment,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_json = sweep_dir / "trial_0000" / "run.json"
    deadline = time.monotonic() + 120
    while not finished(run_json) and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.005)
    worker.send_signal(signal.SIGUSR1)
    output, _ = worker.communicate(timeout=120)
    assert worker.returncode == 75, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    stopped = [line for line in output.splitlines() if "between trials" in line]
    assert len(stopped) == 1 and "Fix:" not in stopped[0] and "same command" in stopped[0], output[-3000:]
    trials = load(sweep_dir).get_trials()
    assert "RUNNING" not in {t.state.name for t in trials}
    assert not (sweep_dir / "trial_0002").exists()  # no trial started after the signal
    with open(sweep_dir / "trials.csv") as file:
        assert [(int(r["number"]), r["state"]) for r in csv.DictReader(file)] == [(t.number, t.state.name)
                                                                               for t in trials]
    again = run_cli(args, cwd=workdir)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    counted = [t for t in load(sweep_dir).get_trials() if not t.system_attrs.get("runner:retried")]
    assert [t.state for t in counted] == [optuna.trial.TrialState.COMPLETE] * 3
    assert os.path.isfile(sweep_dir / "optimization_results.yaml")


@pytest.mark.slow
@pytest.mark.slurm
def test_a_sweep_job_warned_between_trials_requeues_itself_and_finishes_the_sweep(workdir):
    """SLURM's warning before the time limit (USR1 to the batch shell, which is the worker) right after a trial:
    the worker requeues its job and exits 0; the requeued job goes on with the same study to n_trials."""
    from tests.test_slurm import PROJECT, SMALL, slurm_reachable, state, submit, wait

    if slurm_reachable() is not None:
        pytest.skip(f"no SLURM cluster reachable: {slurm_reachable()}")
    sweep_dir = workdir / "sweep"
    array = submit([*SMALL, "--array=0", str(PROJECT / "scripts/slurm/sweep.sbatch"),
                    *sweep_args(sweep_dir, LR, "hydra.sweeper.n_trials=3")[1:]], workdir)
    job = f"{array}_0"  # one array task: the worker
    run_json = sweep_dir / "trial_0000" / "run.json"
    deadline = time.monotonic() + 180
    while not finished(run_json) and time.monotonic() < deadline:
        time.sleep(0.01)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True)
    deadline = time.monotonic() + 60
    while state(job) not in ("PENDING", "REQUEUED") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert state(job) in ("PENDING", "REQUEUED"), state(job)
    time.sleep(2.5)  # SLURM holds a requeued job back; let it start sooner (as tests/test_slurm.py does)
    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], capture_output=True)
    out = workdir / f"outputs/runner-sweep-{job}.out"
    assert wait(job) == "COMPLETED", out.read_text()[-3000:]
    text = out.read_text()
    assert "between trials" in text and "the SLURM job is requeued" in text, text[-3000:]
    assert text.count(f"requeued SLURM job {job}") == 1, text[-3000:]  # once: by the worker or by its trial
    counted = [t for t in load(sweep_dir).get_trials() if not t.system_attrs.get("runner:retried")]
    assert [t.state.name for t in counted] == ["COMPLETE"] * 3
