"""checkpoint.every_updates=N: light checkpoints (the weights only) in checkpoints/updates/, their retention
(checkpoint.keep_updates), and the promises they keep: the same weights with and without them, an exact
resume after a stop or a kill, never a resume from one, one-line refusals."""

from __future__ import annotations

import pytest
import torch

from runner.common import checkpoint_files
from runner.common.stop_signals import Preempted
from runner.evaluation.evaluator import model_of_checkpoint
from runner.run import train_and_evaluate as train_job
from runner.training import job, light_checkpoints, loop
from runner.training.checkpoint import find_resume_state
from tests.conftest import TINY, assert_identical, compose_config, refused_in_one_line, stop_at_step
from tests.conftest import checkpoint_weights as weights

# TINY with every random stream a resume must restore, 3 epochs of 3 updates each (9 updates)
RANDOM_STREAMS = [*TINY, "trainer.deterministic=true", "model.dropout=0.3", "dataset.augment=basic", "trainer.epochs=3"]
# light checkpoints at updates 0, 3, 6, 9: the initial weights and the ends of the epochs; the newest 2 kept
LIGHT = ["checkpoint.every_updates=3", "checkpoint.keep_updates=2"]


def updates_folder(run_dir):
    return run_dir / "checkpoints" / "updates"


def names(run_dir) -> list[str]:
    return sorted(p.name for p in updates_folder(run_dir).iterdir())


@pytest.mark.parametrize(("setting", "fix"), [
    ("checkpoint.every_updates=0", "checkpoint.every_updates=100"),
    ("checkpoint.every_updates=-5", "checkpoint.every_updates=100"),
    ("checkpoint.keep_updates=0", "checkpoint.keep_updates=10"),
])
def test_bad_values_are_refused_in_one_line(setting, fix, capsys):
    extra = [] if setting.startswith("checkpoint.every_updates") else ["checkpoint.every_updates=10"]
    line = refused_in_one_line([*TINY, *extra, setting], capsys)
    assert setting.split("=")[0] in line and f"Fix: {fix}" in line


def test_keep_updates_without_light_checkpoints_is_refused(capsys):
    line = refused_in_one_line([*TINY, "checkpoint.keep_updates=3"], capsys)
    assert "checkpoint.keep_updates=3" in line and "checkpoint.every_updates" in line


def test_retention_keeps_the_newest_and_the_initial_weights(tmp_path):
    for step in (0, 10, 20, 30, 40):
        (tmp_path / light_checkpoints.update_name(step)).write_bytes(b"x")
    (tmp_path / ".update-00000050.pt.tmp-1").write_bytes(b"partial")  # a killed save: never listed
    light_checkpoints.prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.glob("update-*")) == [
        "update-00000000.pt", "update-00000030.pt", "update-00000040.pt"]
    light_checkpoints.prune(tmp_path, keep=None)  # null: keep all
    assert len(list(tmp_path.glob("update-*"))) == 3


def test_light_checkpoints_hold_the_weights_and_leave_training_unchanged(tmp_path, monkeypatch, caplog):
    initial = {}
    real_fit = job.fit

    def fit(cfg, run_dir, train_set, model, *args, **kwargs):  # the weights the run starts from
        initial.update({key: value.clone() for key, value in model.state_dict().items()})
        return real_fit(cfg, run_dir, train_set, model, *args, **kwargs)

    monkeypatch.setattr(job, "fit", fit)
    train_job(compose_config(RANDOM_STREAMS), tmp_path / "plain")
    with caplog.at_level("INFO"):
        train_job(compose_config([*RANDOM_STREAMS, *LIGHT]), tmp_path / "light")
    assert ("light checkpoints (weights only) every 3 updates in checkpoints/updates/ (the newest 2 and the initial "
            "weights kept" in caplog.text)
    for epoch in (1, 2, 3):  # the same weights with and without light checkpoints
        assert_identical(weights(tmp_path / "plain", epoch), weights(tmp_path / "light", epoch))

    assert names(tmp_path / "light") == ["update-00000000.pt", "update-00000006.pt", "update-00000009.pt"]
    folder = updates_folder(tmp_path / "light")
    first = checkpoint_files.load(folder / "update-00000000.pt", parts=checkpoint_files.EVALUATED_PARTS)
    assert first["light"] is True and first["global_step"] == 0 and first["epoch"] == 0
    assert not {"optimizer", "schedule", "scaler", "rng", "rng_by_rank"} & first.keys()
    assert_identical(first["model"], initial)
    last = checkpoint_files.load(folder / "update-00000009.pt", parts=checkpoint_files.EVALUATED_PARTS)
    assert last["epoch"] == 3 and last["global_step"] == 9
    assert_identical(last["model"], weights(tmp_path / "plain", 3))
    middle = torch.load(folder / "update-00000006.pt", weights_only=True)
    assert_identical(middle["model"], weights(tmp_path / "plain", 2))
    # the evaluator rebuilds the model from it as from any checkpoint
    model = model_of_checkpoint(middle["config"], middle, folder / "update-00000006.pt", torch.device("cpu"), [])
    assert_identical(model.state_dict(), weights(tmp_path / "plain", 2))


class Killed(BaseException):
    """kill -9, in-process: nothing after it runs (no checkpoint, no handler)."""


def kill_at_step(monkeypatch, step: int) -> None:
    """The process dies during update `step`: no checkpoint is written for it."""
    real = loop.train_step

    def train_step(run, *args, **kwargs):
        update = real(run, *args, **kwargs)
        if run.global_step == step:
            raise Killed
        return update
    monkeypatch.setattr(loop, "train_step", train_step)


@pytest.mark.parametrize("how", ["stopped", "killed"])
def test_a_run_stopped_or_killed_resumes_to_the_same_weights_and_light_checkpoints(how, tmp_path, monkeypatch):
    cfg = compose_config([*RANDOM_STREAMS, "checkpoint.every_updates=2"])
    train_job(cfg, tmp_path / "straight")
    with monkeypatch.context() as patch:
        if how == "stopped":
            stop_at_step(patch, 5)  # mid-epoch 2: a preempt checkpoint at step 5
        else:
            kill_at_step(patch, 5)  # resumes from epoch-0001.pt (step 3)
        with pytest.raises(Preempted if how == "stopped" else Killed):
            train_job(cfg, tmp_path / "resumed")
    assert names(tmp_path / "resumed")[-1] == "update-00000004.pt"
    train_job(cfg, tmp_path / "resumed")
    assert_identical(weights(tmp_path / "straight", 3), weights(tmp_path / "resumed", 3))
    assert names(tmp_path / "straight") == names(tmp_path / "resumed") == [
        f"update-{step:08d}.pt" for step in (0, 2, 4, 6, 8)]
    for name in names(tmp_path / "straight"):
        a, b = (torch.load(updates_folder(tmp_path / run) / name, weights_only=True) for run in ("straight", "resumed"))
        assert_identical(a["model"], b["model"])


def test_a_run_never_resumes_from_a_light_checkpoint(tmp_path):
    cfg = compose_config([*TINY, "checkpoint.every_updates=1"])
    model = torch.nn.Linear(2, 2)
    state = light_checkpoints.light_state(cfg, model, epoch=1, global_step=6, provenance={})
    updates_folder(tmp_path).mkdir(parents=True)
    checkpoint_files.save_atomic(state, updates_folder(tmp_path) / light_checkpoints.update_name(6))
    assert find_resume_state(cfg, tmp_path) == (None, None)


def test_resume_from_a_light_checkpoint_is_refused_in_one_line(tmp_path, capsys):
    light = tmp_path / "run" / "checkpoints" / "updates" / light_checkpoints.update_name(300)
    light.parent.mkdir(parents=True)
    light.write_bytes(b"x")
    line = refused_in_one_line([*TINY, f"resume={light}"], capsys)
    assert "light checkpoint" in line and "Fix: resume=" in line and "epoch-NNNN.pt" in line
