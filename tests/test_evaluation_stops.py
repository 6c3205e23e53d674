"""A stop signal while the evaluator works through a run's checkpoints (issue 22 item 2, the evaluator's part).

SLURM's warning (USR1, 120 s before the time limit) may come while the evaluator works through many
checkpoints, after training or as `python -m runner.evaluate`. It stops between two checkpoints: the rows
written stay, the checkpoint it was on when the signal came is finished (a partly evaluated one would write
nothing), and `stop_signals.Preempted` goes up to the entry, which exits 75 (0 after a SLURM requeue); the
same command evaluates the rest.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.cli.evaluate import evaluate
from runner.common import stop_signals
from runner.common.stop_signals import Preempted
from runner.evaluation import results
from runner.evaluation.evaluator import evaluate_one
from runner.run import train_and_evaluate as train_job
from tests.conftest import TINY, cli_env, compose_config, run_cli

CHECKPOINTS = [f"checkpoints/epoch-000{epoch}.pt" for epoch in (1, 2, 3)]


def settings(run_dir: Path, *overrides: str):
    return compose_config([f"run_dir={run_dir}", *overrides], config_name="evaluate")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished 3-epoch run with a checkpoint every epoch, not yet evaluated."""
    run_dir = tmp_path_factory.mktemp("stops") / "run"
    train_job(compose_config([*TINY, "trainer.epochs=3"]), run_dir)
    return run_dir


@pytest.fixture
def run_dir(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


def evaluated(run_dir: Path) -> list[str]:
    return [row["checkpoint"] for row in results.read_rows(run_dir / "eval")]


def predictions(run_dir: Path) -> list[str]:
    return sorted(path.name for path in (run_dir / "eval" / "predictions").glob("*.pt"))


def signal_after_rows(monkeypatch, rows: int, name: str = "SIGUSR1") -> None:
    """stop_signals.received() says `name` from the moment the evaluator has written `rows` rows in this test."""
    written = []
    append_row = results.append_row

    def append_and_count(eval_dir, row):
        append_row(eval_dir, row)
        written.append(row["checkpoint"])

    monkeypatch.setattr(results, "append_row", append_and_count)
    monkeypatch.setattr(stop_signals, "received", lambda: name if len(written) >= rows else None)


def test_a_signal_after_the_first_row_stops_before_the_second_checkpoint_and_the_rerun_does_the_rest(
        run_dir, monkeypatch):
    with monkeypatch.context() as patch:
        signal_after_rows(patch, 1)
        with pytest.raises(Preempted) as stopped:
            evaluate(settings(run_dir))
    assert (stopped.value.signal_name, stopped.value.checkpoint, stopped.value.step) == ("SIGUSR1", CHECKPOINTS[0], -1)
    assert str(stopped.value) == f"stopped by SIGUSR1 during the evaluation: checkpoint {CHECKPOINTS[0]} written"
    assert stopped.value.requeued is False and not stopped.value.by_user
    assert evaluated(run_dir) == CHECKPOINTS[:1]  # the row written stays; the next checkpoint was not begun
    assert predictions(run_dir) == ["epoch-0001.val.pt"]
    first = results.read_rows(run_dir / "eval")[0]

    best = evaluate(settings(run_dir))  # the same command, no signal: the rest
    assert evaluated(run_dir) == CHECKPOINTS
    assert results.read_rows(run_dir / "eval")[0] == first  # not evaluated again
    assert best is not None and (run_dir / "eval" / "best.json").is_file()


def test_a_signal_before_the_evaluation_stops_before_the_first_checkpoint(run_dir, monkeypatch):
    signal_after_rows(monkeypatch, 0, "SIGTERM")
    with pytest.raises(Preempted, match="stopped by SIGTERM during the evaluation: nothing new to save"):
        evaluate(settings(run_dir, "split=test"))  # the look at test evaluates on val first
    assert evaluated(run_dir) == [] and predictions(run_dir) == []
    assert not (run_dir / "eval" / "test_ledger.jsonl").exists()


def test_ctrl_c_stops_between_checkpoints_as_the_users_stop(run_dir, monkeypatch):
    signal_after_rows(monkeypatch, 2, "SIGINT")
    with pytest.raises(Preempted) as stopped:
        evaluate(settings(run_dir, "tta=flip"))
    assert stopped.value.by_user and stopped.value.checkpoint == CHECKPOINTS[1]
    assert evaluated(run_dir) == CHECKPOINTS[:2]


def test_one_checkpoint_asked_between_training_updates_is_evaluated_whatever_signal_came(run_dir, monkeypatch):
    """Early stopping and pruning evaluate one checkpoint between the training loop's updates; the loop has its
    own safe points (and under torchrun a stop on rank 0 alone, in its evaluator, would leave the others waiting)."""
    signal_after_rows(monkeypatch, 0)
    row = evaluate_one(run_dir, settings(run_dir), run_dir / CHECKPOINTS[1])
    assert row is not None and evaluated(run_dir) == CHECKPOINTS[1:2]


def test_the_members_of_an_ensemble_stop_between_them(run_dir, monkeypatch):
    evaluate(settings(run_dir))  # every checkpoint on val
    signal_after_rows(monkeypatch, 1)
    with pytest.raises(Preempted):
        evaluate(settings(run_dir, "ensemble_top_k=3", "split=test"))
    assert [row["split"] for row in results.read_rows(run_dir / "eval")] == ["val"] * 3 + ["test"]


def test_a_watcher_waiting_for_the_run_folder_stops_at_its_next_look(tmp_path, monkeypatch):
    from runner.evaluation.watch import wait_for_run

    signal_after_rows(monkeypatch, 0)
    with pytest.raises(Preempted, match="nothing new to save"):
        wait_for_run(settings(tmp_path / "not yet", "watch=true", "poll_seconds=0.01", "idle_minutes=0.01"))


# ---------------------------------------------------------------------------------------------
# python -m runner.evaluate, and the signal sent to it


@pytest.fixture(scope="module")
def long_evaluation(tmp_path_factory) -> Path:
    """A run of 6 checkpoints and a validation split of 8000 samples: about half a second a checkpoint here."""
    run_dir = tmp_path_factory.mktemp("long") / "run"
    train_job(compose_config([*TINY, "trainer.epochs=6", "dataset.val_size=8000"]), run_dir)
    return run_dir


def usr1_after_rows(run_dir: Path, cwd: Path, env: dict, rows: int = 1, *overrides: str) -> subprocess.CompletedProcess:
    """python -m runner.evaluate run_dir=RUN, sent USR1 as soon as it has written `rows` rows."""
    command = [sys.executable, "-m", "runner.evaluate", f"run_dir={run_dir}", "galleries=false", *overrides]
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "eval" / "metrics.jsonl").is_file() or len(evaluated(run_dir)) < rows:
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.005)
        process.send_signal(signal.SIGUSR1)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:  # it did not stop: no evaluator left behind
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.mark.slow
def test_usr1_to_runner_evaluate_exits_75_in_one_line_and_the_same_command_evaluates_the_rest(long_evaluation,
                                                                                               tmp_path):
    run_dir = Path(shutil.copytree(long_evaluation, tmp_path / "run"))
    stopped = usr1_after_rows(run_dir, tmp_path, cli_env())
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode == 75, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    said = [line for line in output.splitlines() if "stopped by SIGUSR1" in line]
    assert len(said) == 1 and "during the evaluation" in said[0], output[-3000:]
    kept = evaluated(run_dir)
    assert 1 <= len(kept) < 6 and len(set(kept)) == len(kept), kept

    rerun = run_cli([f"run_dir={run_dir}", "galleries=false"], cwd=tmp_path, module="runner.evaluate")
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert sorted(evaluated(run_dir)) == [f"checkpoints/epoch-000{epoch}.pt" for epoch in range(1, 7)]
    assert evaluated(run_dir)[:len(kept)] == kept


def slurm_job(tmp_path: Path) -> dict:
    """The environment of SLURM job 4242 whose `scontrol` writes its arguments to tmp_path/scontrol.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    return {**cli_env(), "SLURM_JOB_ID": "4242", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.slow
def test_usr1_to_runner_evaluate_under_slurm_requeues_the_job_and_exits_0(long_evaluation, tmp_path):
    run_dir = Path(shutil.copytree(long_evaluation, tmp_path / "run"))
    stopped = usr1_after_rows(run_dir, tmp_path, slurm_job(tmp_path))
    assert stopped.returncode == 0, (stopped.stdout + stopped.stderr)[-3000:]
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"
    assert 1 <= len(evaluated(run_dir)) < 6


@pytest.mark.slow
def test_usr1_to_a_watcher_waiting_for_checkpoints_stops_it_without_requeueing_the_job(trained, tmp_path):
    """watch=true follows a run whose own job requeues itself (evaluate.during_training starts the watcher
    inside the training job): the watcher stops at its next look, exit 75, and leaves the requeue to the run."""
    run_dir = Path(shutil.copytree(trained, tmp_path / "run"))
    (run_dir / "run.json").write_text('{"status": "running"}')  # still training: the watcher waits
    stopped = usr1_after_rows(run_dir, tmp_path, slurm_job(tmp_path), 3, "watch=true", "poll_seconds=0.2")
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode == 75, output[-3000:]
    assert "Traceback" not in output and len([line for line in output.splitlines() if "stopped by" in line]) == 1
    assert not (tmp_path / "scontrol.log").exists()


def test_a_signal_during_the_evaluation_after_training_records_the_stop_and_the_rerun_evaluates_the_rest(
        tmp_path, monkeypatch):
    import json

    cfg = compose_config([*TINY, "trainer.epochs=3", "evaluate.after_training=true"])
    with monkeypatch.context() as patch:
        signal_after_rows(patch, 1)
        with pytest.raises(Preempted):
            train_job(cfg, tmp_path / "run")
    status = json.loads((tmp_path / "run" / "run.json").read_text())["status"]
    assert status.startswith("preempted: stopped by SIGUSR1 during the evaluation"), status
    assert len(results.read_rows(tmp_path / "run" / "eval")) == 1
    train_job(cfg, tmp_path / "run")  # the requeued job: the run is finished, the evaluation goes on
    assert len(results.read_rows(tmp_path / "run" / "eval")) == 3
    assert (tmp_path / "run" / "eval" / "best.json").is_file()
