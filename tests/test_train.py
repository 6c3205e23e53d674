"""The training loop: exact accumulation, clipping, bf16 on the CPU, determinism, non-finite stops."""

from __future__ import annotations

import math

import pytest
import torch

from runner import checkpoint_files, models
from runner.data import datasets
from runner.errors import UserError
from runner.run import train_and_evaluate as train_job
from runner.runtime import seed_everything
from runner.training.loop import micro_batch_loss
from tests.conftest import TINY, compose_config


def final_weights(run_dir, epoch=2) -> dict:
    return checkpoint_files.load(run_dir / "checkpoints" / checkpoint_files.checkpoint_name(epoch))["model"]


def initial_model(cfg):
    """The model exactly as train_job initializes it (same seed, same order of random draws)."""
    seed_everything(cfg.trainer.seed, False)
    datasets.build_splits(cfg.dataset)
    return models.build(cfg.model)


def test_accumulated_gradient_equals_big_batch_gradient():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 11 * 13, 7))
    x, y = torch.randn(12, 3, 11, 13), torch.randint(0, 7, (12,))
    loss, _, _ = micro_batch_loss(model, x, y, 12, 0.0, None)
    loss.backward()
    big = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for chunk in range(3):  # three micro-batches of 4
        loss, _, _ = micro_batch_loss(model, x[4 * chunk: 4 * chunk + 4], y[4 * chunk: 4 * chunk + 4], 12, 0.0, None)
        loss.backward()
    for a, b in zip(big, (p.grad for p in model.parameters()), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_training_with_micro_batches_equals_training_with_whole_batches(tmp_path):
    """30 samples in learning batches of 12: the last window has 6 samples (a 4 and a 2)."""
    accumulated = compose_config([*TINY, "trainer.micro_batch_size=4"])
    whole = compose_config([*TINY, "trainer.micro_batch_size=12"])
    train_job(accumulated, tmp_path / "accumulated")
    train_job(whole, tmp_path / "whole")
    a, b = final_weights(tmp_path / "accumulated"), final_weights(tmp_path / "whole")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_dividing_by_the_micro_batch_would_be_caught(tmp_path, monkeypatch):
    """The check of the check: normalize each micro-batch by its own size and the weights differ."""
    import runner.training.loop as train_module

    def wrong_loss(model, x, y, window_size, smoothing, amp_dtype):
        return micro_batch_loss(model, x, y, len(y), smoothing, amp_dtype)

    train_job(compose_config([*TINY, "trainer.micro_batch_size=12"]), tmp_path / "whole")
    monkeypatch.setattr(train_module, "micro_batch_loss", wrong_loss)
    train_job(compose_config([*TINY, "trainer.micro_batch_size=4"]), tmp_path / "wrong")
    a, b = final_weights(tmp_path / "wrong"), final_weights(tmp_path / "whole")
    assert any(not torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)


def test_deterministic_runs_are_bit_identical(tmp_path):
    cfg = compose_config([*TINY, "trainer.deterministic=true", "dataset.augment=basic", "model=lenet"])
    train_job(cfg, tmp_path / "one")
    train_job(cfg, tmp_path / "two")
    a, b = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gradient_clipping_clips_the_gradient_not_the_loss(tmp_path):
    """Plain SGD, one update: the weights move by exactly lr * clip when the gradient is clipped."""
    base = [*TINY, "trainer.epochs=1", "trainer.batch_size=30", "trainer.micro_batch_size=10",
            "optimizer=sgd", "optimizer.lr=1.0", "optimizer.momentum=0.0", "optimizer.nesterov=false",
            "optimizer.weight_decay=0.0"]
    moves = {}
    for clip in ("null", "0.001"):
        cfg = compose_config([*base, f"trainer.grad_clip_norm={clip}"])
        start = initial_model(cfg).state_dict()
        train_job(cfg, tmp_path / clip)
        end = final_weights(tmp_path / clip, epoch=1)
        moves[clip] = math.sqrt(sum(float(((end[k] - start[k]) ** 2).sum()) for k in start))
    assert moves["0.001"] == pytest.approx(1.0 * 0.001, rel=1e-4)
    assert moves["null"] > 10 * moves["0.001"]


def test_bf16_autocast_trains_on_the_cpu(tmp_path):
    cfg = compose_config([*TINY, "trainer.precision=bf16", "model=convnet", "model.channels=8",
                          "model.n_blocks=2", "trainer.epochs=6", "optimizer.lr=0.01"])
    figures = train_job(cfg, tmp_path / "bf16")["train"]
    assert figures["loss"] < 0.5 * math.log(7), figures


def test_fp16_on_the_cpu_is_refused_with_the_fix(tmp_path):
    cfg = compose_config([*TINY, "trainer.precision=16", "trainer.device=cpu"])
    with pytest.raises(UserError, match="trainer.precision=16 needs a CUDA GPU.*Fix: trainer.precision=bf16"):
        train_job(cfg, tmp_path / "fp16")


def test_non_finite_loss_stops_the_run_and_names_the_step(tmp_path):
    cfg = compose_config([*TINY, "dataset.noise=nan"])
    with pytest.raises(UserError, match=r"non-finite at step 1 \(epoch 1\)"):
        train_job(cfg, tmp_path / "nan")
    assert checkpoint_files.list_checkpoints(tmp_path / "nan" / "checkpoints") == []


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    cfg = compose_config([*TINY, "optimizer=sgd", "optimizer.lr=1e30", "trainer.log_every_steps=1000"])
    with pytest.raises(UserError, match="non-finite"):
        train_job(cfg, tmp_path / "diverged")
    for path in checkpoint_files.list_checkpoints(tmp_path / "diverged" / "checkpoints"):
        weights = checkpoint_files.load(path)["model"]
        assert all(torch.isfinite(w).all() for w in weights.values()), path


def test_label_smoothing_and_channels_last_run(tmp_path):
    cfg = compose_config([*TINY, "loss.label_smoothing=0.1", "trainer.channels_last=true", "model=convnet",
                          "model.channels=4", "model.n_blocks=1", "model.activation_checkpointing=true"])
    figures = train_job(cfg, tmp_path / "run")["train"]
    assert math.isfinite(figures["loss"])


def test_batch_norm_with_micro_batches_warns_once(tmp_path, caplog):
    cfg = compose_config([*TINY, "model=resnet18", "trainer.epochs=1"])
    train_job(cfg, tmp_path / "bn")
    warnings = [r for r in caplog.records if "normalization statistics see only the micro-batch" in r.message]
    assert len(warnings) == 1


def test_first_step_reports_the_loss_at_init_against_chance(tmp_path, caplog):
    caplog.set_level("INFO")
    train_job(compose_config(TINY), tmp_path / "run")
    assert "chance level -ln(1/7) = 1.9459" in caplog.text
