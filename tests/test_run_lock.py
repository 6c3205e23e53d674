"""A run folder belongs to one live trainer: a second one on it is refused in one line naming the holder."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from runner.common.errors import UserError
from runner.run import train_and_evaluate as train_job
from tests.conftest import TINY, cli_env, compose_config, run_cli


def hold_in_another_process(run_dir):
    """A process that holds run_dir the way a trainer does, until it is killed."""
    code = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from runner.common.run_lock import holding
        with holding(Path({str(run_dir)!r})):
            print("holding", flush=True)
            time.sleep(600)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=cli_env())
    assert holder.stdout.readline().strip() == "holding"
    return holder


def test_a_second_trainer_on_a_held_run_folder_is_refused_naming_the_holder(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = hold_in_another_process(run_dir)
    try:
        with pytest.raises(UserError) as refused:
            train_job(compose_config(TINY), run_dir)
    finally:
        holder.kill()
        holder.wait()
    message = str(refused.value)
    assert "\n" not in message and str(run_dir) in message
    assert f"pid {holder.pid}" in message and socket.gethostname() in message and "since" in message
    assert "Fix:" in message
    assert not (run_dir / "run.json").exists() and not (run_dir / "checkpoints").exists()  # nothing written
    # the holder is gone (killed: its lock died with it): the folder is free again, the dead holder named
    result = train_job(compose_config(TINY), run_dir)
    assert result["train"]["epoch"] == 2


def test_a_stale_holder_left_by_a_killed_trainer_is_recognised(tmp_path, caplog):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run_dir / ".run.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout),
                                                   "since": "2026-01-01T00:00:00"}))
    with caplog.at_level("INFO"):
        train_job(compose_config(TINY), run_dir)
    assert f"pid {int(dead.stdout)}" in caplog.text and "no longer holds" in caplog.text


@pytest.mark.slow
def test_two_trainers_started_together_on_one_folder_train_once(tmp_path):
    run_dir = tmp_path / "run"
    settings = [*TINY, "trainer.epochs=3", "dataset.train_size=600", f"hydra.run.dir={run_dir}"]
    first = subprocess.Popen([sys.executable, "-m", "runner", *settings], cwd=tmp_path, env=cli_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (run_dir / "run.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    second = run_cli(settings, cwd=tmp_path)
    output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output[-2000:]
    assert second.returncode == 2 and "is in use by another trainer" in second.stdout + second.stderr
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
