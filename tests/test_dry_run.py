"""trainer.dry_run=true: the real job in seconds, in a temporary folder, and the same errors as a real run."""

from __future__ import annotations

import re

import pytest

from tests.conftest import TINY, run_cli


def test_a_dry_run_trains_checkpoints_resumes_and_evaluates_and_leaves_nothing(tmp_path):
    result = run_cli([*TINY, "trainer.epochs=30", "trainer.dry_run=true", f"hydra.run.dir={tmp_path / 'run'}"],
                     cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:]
    out = result.stdout
    assert "dry run in " in out and "resuming from" in out and "on val: loss" in out
    assert "dry run passed in" in out and "epoch 30/30" not in out  # two epochs, not the configured thirty
    assert not (tmp_path / "run").exists()  # nothing left behind, not even Hydra's folder
    assert "run directory:" not in out and "TensorBoard:" not in out  # no paths of the deleted temporary folder


def test_a_dry_run_under_torchrun_is_refused_in_one_line(tmp_path):
    """Each process would make its own temporary folder and resume from another epoch: a hang."""
    import subprocess
    import sys

    from tests.conftest import cli_env

    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "runner", *TINY,
               "trainer.micro_batch_size=2", "trainer.dry_run=true", f"hydra.run.dir={tmp_path / 'run'}"]
    result = subprocess.run(command, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    said = result.stdout + result.stderr
    assert "trainer.dry_run=true runs in one process" in said and "Fix:" in said, said[-3000:]  # (torchrun's
    # agent adds its own ChildFailedError traceback for any worker that exits non-zero)


def test_a_dry_run_fails_with_the_message_the_real_run_would_give(tmp_path):
    planted = ["loss._target_=tests.byo_losses.per_class", "~loss.label_smoothing"]
    dry = run_cli([*TINY, *planted, "trainer.dry_run=true"], cwd=tmp_path)
    real = run_cli([*TINY, *planted], cwd=tmp_path)
    said = "the loss per_class returned a tensor of shape (4, 7) for 4 samples"
    assert dry.returncode == real.returncode == 2
    assert said in dry.stdout and said in real.stdout and "Traceback" not in dry.stdout + dry.stderr


@pytest.mark.slow
def test_the_dry_run_is_a_check_that_names_what_would_stop_the_real_run(workdir):
    result = run_cli([*TINY, "checks=[dry_run]"], cwd=workdir, module="runner.check")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"dry_run\s+2 epochs of 2 learning batches in [\d.]+ s .* PASS", result.stdout), result.stdout
    broken = run_cli([*TINY, "checks=[dry_run]", "loss._target_=tests.byo_losses.per_class", "~loss.label_smoothing"],
                     cwd=workdir, module="runner.check")
    assert broken.returncode == 1, broken.stdout[-3000:] + broken.stderr[-3000:]
    row = next(line for line in broken.stdout.splitlines() if line.startswith("dry_run"))
    assert "FAIL" in row and "the real run would stop the same way" in row and "returned a tensor of shape" in row, row
    from runner.checks.registry import PREFLIGHT

    assert "dry_run" in PREFLIGHT


@pytest.mark.parametrize("schedule", ["cosine", "warmup_cosine", "onecycle", "linear"])
def test_a_dry_run_passes_with_a_schedule_written_in_the_total_epochs(tmp_path, schedule):
    """Its first job trained 1 epoch and its second resumed that checkpoint for 2: a schedule in total epochs
    is refused to stretch on resume, so the dry run failed on every such schedule (and on flowers_finetune)."""
    from runner.dry_run import dry_run
    from tests.conftest import compose_config

    dry_run(compose_config(["+experiment=smoke", f"schedule={schedule}", "evaluate.galleries=false"]))


def test_a_dry_run_goes_through_a_frozen_stage_and_the_unfreeze(tmp_path, caplog):
    import logging

    from runner.dry_run import dry_run
    from tests.conftest import compose_config

    with caplog.at_level(logging.INFO):
        dry_run(compose_config(["+experiment=smoke", "finetune.freeze_epochs=5", "trainer.epochs=10",
                                "evaluate.galleries=false"]))
    assert "epoch 1: the body frozen" in caplog.text and "epoch 2: the body unfrozen" in caplog.text
