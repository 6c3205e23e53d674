"""Which checkpoint a run resumes from, and which changes a resume accepts (issue: exactness at the seams)."""

from __future__ import annotations

import pytest

from runner import checkpoint_files
from runner.errors import UserError
from runner.run import train_and_evaluate as train_job
from tests.conftest import TINY, compose_config
from tests.conftest import checkpoint_weights as weights


def test_resume_path_only_seeds_a_run_folder_that_has_no_checkpoint_of_its_own(tmp_path, caplog):
    """A SLURM requeue reruns the same command: resume=PATH must not take the run back to PATH."""
    train_job(compose_config(TINY), tmp_path / "a")
    seed = tmp_path / "a" / "checkpoints" / checkpoint_files.checkpoint_name(1)
    command = compose_config([*TINY, "trainer.epochs=3", f"resume={seed}"])
    train_job(command, tmp_path / "b")  # B: epochs 2 and 3 from A's epoch 1
    finished = weights(tmp_path / "b", 3)
    caplog.clear()
    with caplog.at_level("INFO"):
        again = train_job(command, tmp_path / "b")  # the same command again (a requeue): B's own newest wins
    assert again["train"] == {"epoch": 3, "finished": True}
    assert "resume=" in caplog.text and "has checkpoints of its own" in caplog.text
    assert "already finished (3 of 3 epochs)" in caplog.text
    assert all(weights(tmp_path / "b", 3)[key].equal(value) for key, value in finished.items())


@pytest.mark.parametrize("schedule", ["cosine", "warmup_cosine", "onecycle", "linear"])
def test_a_longer_run_is_refused_when_the_schedule_is_written_in_total_epochs(tmp_path, schedule):
    settings = [*TINY, f"schedule={schedule}", *(["schedule.warmup_epochs=1"] if schedule == "warmup_cosine" else [])]
    train_job(compose_config(settings), tmp_path / "run")
    with pytest.raises(UserError) as refused:
        train_job(compose_config([*settings, "trainer.epochs=4"]), tmp_path / "run")
    message = str(refused.value)
    assert "\n" not in message
    assert f"schedule={schedule}" in message and "trainer.epochs=2" in message and "trainer.epochs=4" in message
    assert "Fix:" in message and "new run folder" in message


@pytest.mark.parametrize("schedule", ["constant", "step", "warmup_cosine"])  # the default warmup: 5 epochs
def test_a_longer_run_continues_when_the_schedule_does_not_depend_on_the_total(tmp_path, schedule):
    train_job(compose_config([*TINY, f"schedule={schedule}"]), tmp_path / "run")
    result = train_job(compose_config([*TINY, f"schedule={schedule}", "trainer.epochs=4"]), tmp_path / "run")
    assert result["train"]["epoch"] == 4
