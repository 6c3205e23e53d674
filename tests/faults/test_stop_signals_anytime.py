"""A stop signal at any moment of `python -m runner`, from start-up to exit: never a death by the signal.

SLURM sends USR1 two minutes before a time limit whenever that falls: during the imports, the data
screening, an epoch, the evaluation after the last epoch. Each moment gives a clean stop (exit 75 with
a checkpoint, or the finished run), and the same command then ends with the uninterrupted weights.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import TINY, assert_identical, checkpoint_weights, cli_env, run_cli

pytestmark = pytest.mark.faults

RUN = [*TINY, "trainer.epochs=3", "dataset.train_size=300", "trainer.deterministic=true", "model.dropout=0.3",
       "evaluate.after_training=true"]


def test_usr1_at_seeded_moments_from_start_to_exit_stops_cleanly_and_the_rerun_ends_identical(tmp_path):
    started = time.monotonic()
    straight = run_cli([*RUN, f"hydra.run.dir={tmp_path / 'straight'}"], cwd=tmp_path)
    assert straight.returncode == 0, straight.stdout[-2000:]
    whole = time.monotonic() - started
    # from 0.25 s: the interpreter takes about 0.1 s here before the first line of runner runs (the imports after
    # it take seconds); then seeded moments, and one near the end (the evaluation after the last epoch)
    moments = sorted([0.25, 0.6, *(random.Random(0).uniform(1.0, whole) for _ in range(2)), 0.97 * whole])
    for moment in moments:
        run_dir = tmp_path / f"at-{moment:.2f}"
        process = subprocess.Popen([sys.executable, "-m", "runner", *RUN, f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                                   env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(moment)
        process.send_signal(signal.SIGUSR1)
        output, _ = process.communicate(timeout=120)
        assert process.returncode in (0, 75), f"USR1 at {moment:.2f} s: exit {process.returncode}\n{output[-2000:]}"
        assert "Traceback" not in output, output[-3000:]
        rerun = run_cli([*RUN, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
        assert rerun.returncode == 0, rerun.stdout[-2000:]
        stopped = [line for line in output.splitlines() if "stopped by" in line or "received" in line]
        try:
            assert_identical(checkpoint_weights(tmp_path / "straight", 3), checkpoint_weights(run_dir, 3))
        except AssertionError as error:
            raise AssertionError(f"USR1 at {moment:.2f} s ({stopped}): other weights after the rerun") from error
        assert (run_dir / "eval" / "best.json").is_file(), f"USR1 at {moment:.2f} s: no evaluation after the rerun"
