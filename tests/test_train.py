"""The training loop: learning batches, exact accumulation, clipping, bf16 on the CPU, determinism, non-finite stops."""

from __future__ import annotations

import json
import math
import os
import time
from types import SimpleNamespace

import pytest
import torch

from runner import models
from runner.common import checkpoint_files
from runner.common.errors import UserError
from runner.common.runtime import seed_everything
from runner.data import datasets
from runner.run import train_and_evaluate as train_job
from runner.training.distributed import SINGLE, Processes
from runner.training.learning_batches import learning_batches
from runner.training.loop import micro_batch_loss
from runner.training.losses import cross_entropy
from runner.training.meter import IntervalMeter
from tests.conftest import TINY, checkpoint_weights, compose_config


def final_weights(run_dir, epoch=2) -> dict:
    return checkpoint_weights(run_dir, epoch)  # TINY trains 2 epochs


def initial_model(cfg):
    """The model exactly as train_job initializes it (same seed, same order of random draws)."""
    seed_everything(cfg.trainer.seed, False)
    datasets.build_splits(cfg.dataset)
    return models.build(cfg.model)


def test_accumulated_gradient_equals_big_batch_gradient():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 11 * 13, 7))
    x, y = torch.randn(12, 3, 11, 13), torch.randint(0, 7, (12,))
    loss, _, _ = micro_batch_loss(model, x, y, 12, cross_entropy, None)
    loss.backward()
    big = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for chunk in range(3):  # three micro-batches of 4
        loss, _, _ = micro_batch_loss(model, x[4 * chunk: 4 * chunk + 4], y[4 * chunk: 4 * chunk + 4], 12, cross_entropy, None)
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

    def wrong_loss(model, x, y, window_size, loss, amp_dtype):
        return micro_batch_loss(model, x, y, len(y), loss, amp_dtype)

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


def micro_batches(*sizes):
    """A stand-in for the loader: micro-batches of these sizes, labelled with their sample positions."""
    position = 0
    for size in sizes:
        yield torch.zeros(size, 3), torch.arange(position, position + size)
        position += size


def windows_of(loader, skip, samples, batch_size, processes=SINGLE):
    meter = IntervalMeter(torch.device("cpu"))
    return [(window.start, window.size, [(y.tolist(), last) for _, y, last in window.micro_batches])
            for window in learning_batches(loader, skip, samples, batch_size, processes, meter)]


def test_learning_batches_yield_each_window_s_micro_batches_and_mark_the_last():
    """30 samples in learning batches of 12 (micro-batches of 4): the last window holds a 4 and a 2."""
    windows = windows_of(micro_batches(4, 4, 4, 4, 4, 4, 4, 2), 0, 30, 12)
    assert [(start, size) for start, size, _ in windows] == [(0, 12), (12, 12), (24, 6)]
    assert [[last for _, last in batches] for _, _, batches in windows] == [
        [False, False, True], [False, False, True], [False, True]]
    assert windows[2][2][1][0] == [28, 29]
    resumed = windows_of(micro_batches(4, 4, 4, 4, 2), 12, 30, 12)  # resumed after 12 samples
    assert [(start, size, len(batches)) for start, size, batches in resumed] == [(12, 12, 3), (24, 6, 2)]


def test_learning_batches_take_this_process_s_share_of_each_window():
    """Rank 1 of 3, learning batches of 15: a share of 5 per window, and 2 of the last window's 7."""
    windows = windows_of(micro_batches(5, 5, 2), 0, 37, 15, Processes(rank=1, world_size=3))
    assert [(start, size, [len(y) for y, _ in batches]) for start, size, batches in windows] == [
        (0, 15, [5]), (15, 15, [5]), (30, 7, [2])]
    assert all(batches[-1][1] for _, _, batches in windows)


def test_learning_batches_refuse_a_loader_that_disagrees_with_the_epoch():
    with pytest.raises(RuntimeError, match="more than the 12 samples"):
        windows_of(micro_batches(4, 4, 4, 4), 0, 12, 12)


def test_the_meter_measures_the_wait_for_data():
    def slow_loader():
        for batch in micro_batches(4, 4):
            time.sleep(0.05)
            yield batch

    meter = IntervalMeter(torch.device("cpu"))
    for window in learning_batches(slow_loader(), 0, 8, 8, SINGLE, meter):
        list(window.micro_batches)
    assert meter.data_wait >= 0.09


def test_the_meter_reads_the_interval_and_stops_at_the_first_non_finite_step():
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    run = SimpleNamespace(processes=SINGLE, first_bad_step=torch.tensor(-1), fp16=False,
                          schedule=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0))
    meter = IntervalMeter(torch.device("cpu"))
    meter.add_update(torch.tensor(6.0), torch.tensor(3.0), 4, torch.tensor(2.0))
    meter.add_update(torch.tensor(2.0), torch.tensor(1.0), 4, torch.tensor(4.0))
    figures = meter.read(run, epoch=0)
    assert (figures["loss"], figures["accuracy"], figures["grad_norm"], figures["lr"]) == (1.0, 0.5, 3.0, 0.5)
    run.first_bad_step = torch.tensor(7)
    with pytest.raises(UserError, match=r"non-finite at step 7 \(epoch 3\)"):
        meter.read(run, epoch=2)


@pytest.mark.parametrize(("overrides", "named"), [
    (["trainer.micro_batch_size=1"], "trainer.micro_batch_size=1"),
    # 31 samples in learning batches of 12: the last one has 7, in micro-batches of 2, 2, 2 and 1
    (["trainer.batch_size=12", "trainer.micro_batch_size=2", "dataset.train_size=31"], "1 sample"),
])
def test_batch_norm_on_a_single_sample_is_refused_before_training(overrides, named, tmp_path):
    """BatchNorm cannot normalize one sample (torch: 'Expected more than 1 value per channel')."""
    cfg = compose_config([*TINY, "model=resnet18", *overrides])
    with pytest.raises(UserError, match="BatchNorm") as refused:
        train_job(cfg, tmp_path / "run")
    assert named in str(refused.value) and "Fix:" in str(refused.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_plan_line_says_what_a_small_training_set_really_gets(tmp_path, caplog):
    """A learning batch larger than the training set is one update of all of it, and the log says so."""
    with caplog.at_level("INFO"):
        train_job(compose_config([*TINY, "trainer.batch_size=48", "trainer.micro_batch_size=8",
                                  "trainer.epochs=1"]), tmp_path / "run")
    plan = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("training 30 samples"))
    assert "1 update per epoch of 30 samples (4 micro-batches of 8" in plan, plan
    assert "trainer.batch_size=48 is more than the 30 training samples" in plan, plan


def test_the_progress_bar_spans_the_run_so_its_eta_is_the_runs(monkeypatch):
    from types import SimpleNamespace

    from runner.training.meter import progress_bar

    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    run = SimpleNamespace(cfg=SimpleNamespace(trainer=SimpleNamespace(batch_size=12, epochs=5)), samples_per_epoch=30,
                          processes=SINGLE)
    bar = progress_bar(run, start_epoch=2, first_sample=12)  # resumed mid-way through epoch 3
    assert (bar.total, bar.n, bar.desc) == (15, 7, "epoch 3/5")  # 3 updates an epoch, 5 epochs; 2 epochs + 1 done
    bar.close()


def test_the_first_batch_image_is_small_and_written_once(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_job(compose_config([*TINY, "trainer.batch_size=30", "trainer.micro_batch_size=30"]), tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    images = events.Images("train/first_batch")
    assert len(images) == 1  # once a run
    assert (images[0].width, images[0].height) == (4 * (13 + 2) + 2, 4 * (11 + 2) + 2)  # 16 tiles of 11x13, 4 a row


def test_threads_follow_the_cores_this_process_may_use(monkeypatch, tmp_path):
    from runner.common.runtime import available_cores

    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert available_cores() == 3  # SLURM's CPUs for the task, shared by the task's 2 processes
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert available_cores() == len(os.sched_getaffinity(0))
    seen = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    train_job(compose_config([*TINY, "trainer.num_threads=1", "trainer.epochs=1"]), tmp_path / "run")
    assert seen == [1]


def test_a_digits_run_needs_no_torchvision_to_start(tmp_path):
    """torchvision takes about a second to import: the default run's path to its first update avoids it."""
    import subprocess
    import sys

    from tests.conftest import cli_env

    code = ("import sys; from runner.run import train_and_evaluate; from runner.data import datasets; "
            "from tests.conftest import compose_config; datasets.build_splits(compose_config([]).dataset); "
            "print('torchvision' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), cwd=tmp_path)
    assert result.stdout.strip() == "False", result.stderr[-2000:]


def test_the_first_batch_grid_equals_torchvisions_make_grid():
    from torchvision.utils import make_grid

    from runner.training.meter import image_grid

    for images in (torch.rand(16, 3, 11, 13), torch.rand(6, 1, 8, 8)):
        assert torch.equal(image_grid(images, per_row=4), make_grid(images, nrow=4, pad_value=1.0))


def test_hparams_name_what_the_command_line_changed_and_the_validation_metrics(tmp_path, monkeypatch):
    """TensorBoard's HParams table: the chosen settings (not 81 keys, no plumbing); the metrics: test_hparams.py."""
    import runner.training.job as job

    monkeypatch.setattr(job, "hydra_overrides", lambda: ["optimizer.lr=0.01", "model=mlp", "hydra.job.name=x",
                                                         "sweep.trial=3"])
    train_job(compose_config([*TINY, "optimizer.lr=0.01", "evaluate.after_training=true"]), tmp_path / "run")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["hparams"] == {
        "optimizer.lr": 0.01, "model": "mlp", "trainer.seed": 0}
