"""Checkpoints survive crashes and resume exactly: SIGKILL mid-epoch, rerun, same weights."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from runner.common import checkpoint_files
from runner.common.errors import UserError
from runner.run import train_and_evaluate as train_job
from tests.conftest import EXACT_RESUME, TINY, assert_identical, cli_env, compose_config, run_cli
from tests.conftest import checkpoint_weights as weights


@pytest.mark.slow
def test_sigkill_during_epoch_3_then_rerun_gives_the_uninterrupted_weights(workdir):
    straight, killed = workdir / "straight", workdir / "killed"
    done = run_cli([*EXACT_RESUME, f"hydra.run.dir={straight}"], cwd=workdir)
    assert done.returncode == 0, done.stderr

    command = [sys.executable, "-m", "runner", *EXACT_RESUME, f"hydra.run.dir={killed}"]
    process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=cli_env())
    second = killed / "checkpoints" / checkpoint_files.checkpoint_name(2)
    deadline = time.monotonic() + 240
    while not second.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert second.exists()
    assert not (killed / "checkpoints" / checkpoint_files.checkpoint_name(3)).exists(), "the kill came too late"

    rerun = run_cli([*EXACT_RESUME, f"hydra.run.dir={killed}"], cwd=workdir)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming from" in rerun.stdout and "epoch 2, step 200" in rerun.stdout
    assert_identical(weights(straight, 4), weights(killed, 4))

    again = run_cli([*EXACT_RESUME, f"hydra.run.dir={killed}"], cwd=workdir)
    assert again.returncode == 0
    assert "already finished (4 of 4 epochs): nothing to do" in again.stdout


def test_resume_after_extending_epochs_equals_a_longer_run(tmp_path):
    random_streams = ["trainer.deterministic=true", "model.dropout=0.3", "dataset.augment=basic"]
    two = compose_config([*TINY, *random_streams])
    four = compose_config([*TINY, *random_streams, "trainer.epochs=4"])
    train_job(two, tmp_path / "resumed")
    train_job(four, tmp_path / "resumed")  # same run directory: continues from epoch 2
    train_job(four, tmp_path / "straight")
    assert_identical(weights(tmp_path / "straight", 4), weights(tmp_path / "resumed", 4))


def test_resume_from_a_given_file(tmp_path):
    train_job(compose_config(TINY), tmp_path / "first")
    path = tmp_path / "first" / "checkpoints" / checkpoint_files.checkpoint_name(1)
    train_job(compose_config([*TINY, f"resume={path}"]), tmp_path / "second")
    assert_identical(weights(tmp_path / "first", 2), weights(tmp_path / "second", 2))


def test_resume_with_a_different_config_is_refused(tmp_path):
    train_job(compose_config(TINY), tmp_path / "run")
    with pytest.raises(UserError, match=r"different config \(optimizer.lr: 0.0003 -> 0.1\)"):
        train_job(compose_config([*TINY, "optimizer.lr=0.1", "trainer.epochs=3"]), tmp_path / "run")


def test_a_truncated_newest_checkpoint_is_skipped(tmp_path, caplog):
    train_job(compose_config(TINY), tmp_path / "run")
    newest = tmp_path / "run" / "checkpoints" / checkpoint_files.checkpoint_name(2)
    newest.write_bytes(newest.read_bytes()[:1000])
    path, state = checkpoint_files.load_newest(tmp_path / "run" / "checkpoints")
    assert path.name == checkpoint_files.checkpoint_name(1) and state["epoch"] == 1
    assert "epoch-0002.pt is truncated" in caplog.text


def test_a_rerun_removes_the_temporary_file_of_a_save_that_was_killed(tmp_path, caplog):
    import socket
    import subprocess
    import sys

    caplog.set_level("INFO")
    run_dir = tmp_path / "run"
    train_job(compose_config([*TINY, "trainer.epochs=1"]), run_dir)
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    leftover = run_dir / "checkpoints" / f".epoch-0002.pt.tmp-{socket.gethostname()}-{dead}"
    leftover.write_bytes(b"half a checkpoint")
    train_job(compose_config([*TINY, "trainer.epochs=2"]), run_dir)
    assert not leftover.exists() and "stopped mid-write" in caplog.text
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["epoch-0001.pt", "epoch-0002.pt"]


def test_a_checkpoint_from_before_a_setting_existed_resumes_and_says_so(tmp_path, caplog):
    """An older runner wrote no `trainer.num_threads` nor a loss `_target_`: those are not changes."""
    train_job(compose_config(TINY), tmp_path / "run")
    path = tmp_path / "run" / "checkpoints" / checkpoint_files.checkpoint_name(1)
    state = checkpoint_files.load(path)
    del state["config"]["trainer"]["num_threads"], state["config"]["loss"]["_target_"], state["config"]["loss"]["_partial_"]
    checkpoint_files.save_atomic(state, path)
    for later in (tmp_path / "run" / "checkpoints").glob("epoch-0002.pt"):
        later.unlink()
    with caplog.at_level("INFO"):
        train_job(compose_config(TINY), tmp_path / "run")
    assert "settings added since the checkpoint was written, taken as now: loss._partial_=True, " \
           "loss._target_='runner.training.losses.cross_entropy', trainer.num_threads=None" in caplog.text
    with pytest.raises(UserError, match=r"different config \(optimizer.lr: 0.0003 -> 0.1\)"):
        train_job(compose_config([*TINY, "optimizer.lr=0.1", "trainer.epochs=3"]), tmp_path / "run")
