"""Checkpoints: weights_only loading, atomic writes, RNG round trips, retention, resumable changes."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from runner.common import checkpoint_files
from runner.common.errors import UserError
from runner.run import train_and_evaluate as train_job
from runner.training import checkpoint
from tests.conftest import TINY, compose_config


def test_a_checkpoint_holds_the_full_state_and_loads_weights_only(tmp_path):
    train_job(compose_config(TINY), tmp_path / "run")
    path = tmp_path / "run" / "checkpoints" / "epoch-0002.pt"
    state = torch.load(path, weights_only=True)
    assert {"model", "optimizer", "schedule", "scaler", "rng", "epoch", "global_step", "config",
            "provenance"} <= state.keys()
    assert state["epoch"] == 2 and state["global_step"] == 6  # 30 samples in batches of 12: 3 updates/epoch
    assert state["config"]["trainer"]["batch_size"] == 12
    assert state["provenance"]["environment"]["torch"] == str(torch.__version__)


def test_save_is_atomic_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "epoch-0001.pt"
    checkpoint_files.save_atomic({"format_version": 1, "x": torch.ones(3)}, path)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        checkpoint_files.save_atomic({"format_version": 1, "x": torch.zeros(3)}, path)
    assert torch.equal(checkpoint_files.load(path)["x"], torch.ones(3))  # the old file is untouched
    assert os.listdir(tmp_path) == ["epoch-0001.pt"]  # and no temporary file is left behind


def test_temporary_files_are_never_listed(tmp_path):
    (tmp_path / ".epoch-0003.pt.tmp-123").write_bytes(b"partial")
    (tmp_path / "epoch-0002.pt").write_bytes(b"x")
    (tmp_path / "epoch-0010.pt").write_bytes(b"x")
    assert [p.name for p in checkpoint_files.list_checkpoints(tmp_path)] == ["epoch-0002.pt", "epoch-0010.pt"]


def test_truncated_or_foreign_files_get_a_clear_message(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pt is truncated or not a checkpoint"):
        checkpoint_files.load(tmp_path / "junk.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "plain.pt")
    with pytest.raises(UserError, match="is not a runner checkpoint"):
        checkpoint_files.load(tmp_path / "plain.pt")


def test_rng_state_round_trip():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = checkpoint.rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item(), np.random.randn())
    checkpoint.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item(), np.random.randn()) == first


def test_keep_last_prunes_old_checkpoints(tmp_path):
    train_job(compose_config([*TINY, "trainer.epochs=4", "checkpoint.keep_last=2"]), tmp_path / "run")
    assert [p.name for p in checkpoint_files.list_checkpoints(tmp_path / "run" / "checkpoints")] == [
        "epoch-0003.pt", "epoch-0004.pt"]


def test_only_settings_that_change_nothing_computed_may_change_on_resume():
    from runner.common.rules import may_change_on_resume
    from tests.conftest import compose_config

    old = {"trainer": {"epochs": 2, "batch_size": 12, "num_workers": 0}, "optimizer": {"lr": 0.1}, "resume": None}
    new = {"trainer": {"epochs": 5, "batch_size": 12, "num_workers": 2}, "optimizer": {"lr": 0.3}, "resume": "x.pt"}
    changes = checkpoint.changed_settings(old, new)
    assert changes == ["optimizer.lr: 0.1 -> 0.3", "resume: None -> 'x.pt'", "trainer.epochs: 2 -> 5",
                       "trainer.num_workers: 0 -> 2"]
    cfg = compose_config(["dataset=synthetic"])
    assert [c for c in changes if not may_change_on_resume(cfg, c.split(":")[0])] == ["optimizer.lr: 0.1 -> 0.3"]
    # the property of a schema field: a whole block, a key of every dataset, a key of one dataset's schema
    assert all(may_change_on_resume(cfg, key) for key in ("checks.overfit_steps", "evaluate.split", "dataset.root",
                                                           "trainer.device", "sweep.trial_id"))
    assert may_change_on_resume(compose_config(["dataset=imagefolder", "dataset.root=x"]), "dataset.cache")
    assert not any(may_change_on_resume(cfg, key) for key in ("trainer.batch_size", "trainer.seed", "dataset.augment",
                                                               "model.width", "optimizer.lr", "trainer.precision"))


def test_resuming_a_run_without_a_scaler_into_fp16_starts_a_fresh_scaler(caplog):
    """A CPU or bf16 checkpoint (empty scaler state) resumed where precision=auto means fp16."""
    import torch

    from runner.training.checkpoint import restore

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda update: 1.0)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
             "scaler": torch.amp.GradScaler("cpu", enabled=False).state_dict(), "rng": checkpoint.rng_state(),
             "epoch": 2, "global_step": 10}
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    caplog.set_level("INFO")
    assert restore(state, model, optimizer, schedule, scaler) == (2, 10)
    assert scaler.get_scale() == torch.amp.GradScaler("cpu").get_scale()
    assert "fresh gradient scaler" in caplog.text


@pytest.mark.parametrize("failure", [
    OSError(28, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4288 vs 4176"),  # torch's disk full
    PermissionError(13, "Permission denied"),
])
def test_a_failed_save_is_one_line_and_leaves_the_previous_checkpoint(failure, tmp_path, monkeypatch):
    folder = tmp_path / "checkpoints"
    state = {"format_version": checkpoint_files.FORMAT_VERSION, "weights": torch.zeros(1000)}
    checkpoint_files.save_atomic(state, folder / "epoch-0001.pt")

    def failing_save(obj, file):
        file.write(b"part of a checkpoint")
        raise failure

    monkeypatch.setattr(checkpoint_files.torch, "save", failing_save)
    with pytest.raises(UserError) as refused:
        checkpoint_files.save_atomic(state, folder / "epoch-0002.pt")
    message = str(refused.value)
    assert "epoch-0002.pt" in message and "epoch-0001.pt is intact" in message and "Fix:" in message
    expected = "permission" if isinstance(failure, PermissionError) else "no space left"
    assert expected in message.lower() and "MB" in message
    assert sorted(p.name for p in folder.iterdir()) == ["epoch-0001.pt"]
    assert checkpoint_files.load(folder / "epoch-0001.pt")["weights"].shape == (1000,)


def a_checkpoint_state() -> dict:
    """A checkpoint's state as training writes it (the parts load checks), without training."""
    from omegaconf import OmegaConf

    from runner import models

    cfg = compose_config([*TINY, "model=linear"])
    return {"format_version": checkpoint_files.FORMAT_VERSION, "epoch": 2, "global_step": 6,
            "model": models.build(cfg.model).state_dict(), "config": OmegaConf.to_container(cfg, resolve=True)}


def meta(state: dict) -> dict:
    state["model"] = {key: torch.empty_like(value, device="meta") for key, value in state["model"].items()}
    return state


@pytest.mark.parametrize(("change", "said"), [
    (meta, "on the meta device"),
    (lambda state: {**state, "epoch": "2"}, "epoch='2'"),
    (lambda state: {**state, "global_step": 6.5}, "global_step=6.5"),
    (lambda state: {**state, "model": [1]}, "model"),
    (lambda state: {**state, "config": {**state["config"], "model": {**state["config"]["model"], "colour": "red"}}},
     "model.colour='red' is not an argument of runner.models.linear"),
    (lambda state: {**state, "config": {**state["config"], "trainer": None}}, "config.trainer"),
])
def test_a_checkpoint_malformed_inside_is_refused_in_one_line_on_load(tmp_path, change, said):
    path = tmp_path / "checkpoints" / "epoch-0002.pt"
    checkpoint_files.save_atomic(change(a_checkpoint_state()), path)
    with pytest.raises(UserError) as refused:
        checkpoint_files.load(path)
    message = str(refused.value)
    assert str(path) in message and said in message and "Fix:" in message and "\n" not in message


def test_a_checkpoint_that_is_a_pickle_is_refused_in_one_line(tmp_path):
    import collections

    torch.save({"format_version": 1, "epoch": collections.Counter("abc")}, tmp_path / "pickle.pt")
    with pytest.raises(UserError) as refused:
        checkpoint_files.load(tmp_path / "pickle.pt")
    assert "pickle.pt" in str(refused.value) and "Fix:" in str(refused.value) and "\n" not in str(refused.value)
