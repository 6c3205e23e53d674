"""Which checkpoint a run resumes from, and which changes a resume accepts (issue: exactness at the seams)."""

from __future__ import annotations

import pytest

from runner.common import checkpoint_files
from runner.common.errors import UserError
from runner.run import train_and_evaluate as train_job
from tests.conftest import TINY, compose_config, run_cli
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


def test_the_cache_setting_may_change_on_resume_it_trains_the_same_pixels(tmp_path, monkeypatch):
    from tests.conftest import assert_identical, make_imagefolder

    monkeypatch.setenv("RUNNER_CACHE", str(tmp_path / "cache"))
    images = make_imagefolder(tmp_path / "images", classes=3, per_class=8, size=(40, 52))
    common = ["dataset=imagefolder", f"dataset.root={images}", "dataset.image_size=[16,16]", "trainer.batch_size=6",
              "trainer.micro_batch_size=3", "trainer.deterministic=true", "dataset.augment=basic",
              "checkpoint.every_epochs=1", "evaluate.after_training=false"]
    train_job(compose_config([*common, "trainer.epochs=3"]), tmp_path / "straight")
    train_job(compose_config([*common, "trainer.epochs=1"]), tmp_path / "changed")
    train_job(compose_config([*common, "trainer.epochs=2", "dataset.cache=disk"]), tmp_path / "changed")
    train_job(compose_config([*common, "trainer.epochs=3", "dataset.cache=memory"]), tmp_path / "changed")
    assert_identical(weights(tmp_path / "straight", 3), weights(tmp_path / "changed", 3))


def test_a_different_thread_count_on_resume_is_named_in_one_warning_and_not_refused(tmp_path, caplog):
    import torch

    threads = torch.get_num_threads()
    try:
        train_job(compose_config([*TINY, "trainer.epochs=1", "trainer.num_threads=1"]), tmp_path / "run")
        with caplog.at_level("WARNING"):
            result = train_job(compose_config([*TINY, "trainer.num_threads=2"]), tmp_path / "run")
    finally:
        torch.set_num_threads(threads)
    assert result["train"]["epoch"] == 2
    warned = [r.getMessage() for r in caplog.records if "threads" in r.getMessage()]
    assert len(warned) == 1 and "1 CPU thread" in warned[0] and "2" in warned[0]
    assert "trainer.num_threads=1" in warned[0]


@pytest.mark.parametrize(("saved_gpus", "current", "restored"), [
    (1, 0, 0),  # this runner: the process's own GPU, whatever its index
    (1, 3, 0),
    (8, 3, 3),  # an older checkpoint with every visible GPU's state: this process's by its device index
    (2, 3, None),  # written on a machine with fewer GPUs: nothing to restore, no IndexError
])
def test_each_process_restores_its_own_gpu_random_stream(monkeypatch, saved_gpus, current, restored):
    import torch

    from runner.training import checkpoint

    state = checkpoint.rng_state()
    state["cuda"] = [torch.full((16,), index, dtype=torch.uint8) for index in range(saved_gpus)]
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda value, device="cuda": calls.append(int(value[0])))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda values: calls.append("all"))
    checkpoint.set_rng_state(state)
    assert calls == ([] if restored is None else [restored])


def test_a_checkpoint_whose_weights_do_not_fit_the_model_is_refused_in_one_line(tmp_path):
    train_job(compose_config(TINY), tmp_path / "a")
    path = tmp_path / "a" / "checkpoints" / checkpoint_files.checkpoint_name(1)
    state = checkpoint_files.load(path)
    first = next(iter(state["model"]))
    state["model"][first] = state["model"][first][:1]  # one row of a layer: another shape
    checkpoint_files.save_atomic(state, path)
    with pytest.raises(UserError) as refused:
        train_job(compose_config([*TINY, f"resume={path}"]), tmp_path / "b")
    message = str(refused.value)
    assert "\n" not in message and str(path) in message and first in message and "Fix:" in message


def test_a_password_in_a_trials_storage_url_is_refused_before_anything_is_written(tmp_path):
    """sweep.storage given by hand (not by the sweeper, which gives it without the password)."""
    result = run_cli([*TINY, "sweep.storage=postgresql://user:s3cret@host/db", f"hydra.run.dir={tmp_path / 'run'}"],
                     cwd=tmp_path)
    assert result.returncode == 2 and "carries a password" in result.stdout + result.stderr
    assert "s3cret" not in result.stdout + result.stderr and not (tmp_path / "run").exists()
