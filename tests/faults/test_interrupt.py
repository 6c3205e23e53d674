"""Ctrl-C mid-epoch is a stop request, as a terminal sends it: SIGINT to the trainer and its loader workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from runner.common import checkpoint_files
from tests.conftest import STOPPABLE, assert_identical, checkpoint_weights, cli_env, run_cli

pytestmark = pytest.mark.faults

WITH_WORKERS = [*STOPPABLE, "trainer.num_workers=2"]


def start_in_its_own_process_group(run_dir, cwd) -> subprocess.Popen:
    """As in a terminal's foreground: Ctrl-C reaches every process of the group (the workers too)."""
    return subprocess.Popen([sys.executable, "-m", "runner", *WITH_WORKERS, f"hydra.run.dir={run_dir}"], cwd=cwd,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def wait_into_epoch_2(run_dir) -> None:
    first = run_dir / "checkpoints" / checkpoint_files.checkpoint_name(1)
    deadline = time.monotonic() + 120
    while not first.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)


def test_ctrl_c_mid_epoch_finishes_the_step_checkpoints_and_the_rerun_ends_identical(tmp_path):
    stopped_dir = tmp_path / "stopped"
    process = start_in_its_own_process_group(stopped_dir, tmp_path)
    wait_into_epoch_2(stopped_dir)
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output[-3000:]
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-3000:]
    assert "Ctrl-C" in output and "Resume with the same command" in output
    assert json.loads((stopped_dir / "run.json").read_text())["status"].startswith("interrupted")
    assert len(checkpoint_files.list_preempted(stopped_dir / "checkpoints")) == 1

    straight = run_cli([*WITH_WORKERS, f"hydra.run.dir={tmp_path / 'straight'}"], cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-2000:]
    rerun = run_cli([*WITH_WORKERS, f"hydra.run.dir={stopped_dir}"], cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "(resumed after" in rerun.stdout
    assert_identical(checkpoint_weights(tmp_path / "straight", 3), checkpoint_weights(stopped_dir, 3))


def test_a_second_ctrl_c_stops_at_once_in_one_line(tmp_path):
    run_dir = tmp_path / "run"
    process = start_in_its_own_process_group(run_dir, tmp_path)
    wait_into_epoch_2(run_dir)
    os.killpg(process.pid, signal.SIGINT)
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert json.loads((run_dir / "run.json").read_text())["status"].startswith("interrupted")
    assert (run_dir / "checkpoints" / checkpoint_files.checkpoint_name(1)).exists()  # nothing written is lost
