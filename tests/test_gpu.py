"""The CUDA paths: bf16 and fp16 autocast, the GradScaler, channels_last. Skipped without a GPU."""

from __future__ import annotations

import math

import pytest
import torch

from runner.run import train_and_evaluate as train_job
from tests.conftest import TINY, compose_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; CI and this CPU machine have none"),
]

CONVNET = [*TINY, "model=convnet", "model.channels=8", "model.n_blocks=2", "trainer.device=cuda",
           "trainer.epochs=6", "optimizer.lr=0.01", "dataset.image_size=[32,32]"]


@pytest.mark.parametrize("precision", ["bf16", "16", "32"])
def test_mixed_precision_trains_on_cuda(tmp_path, precision):
    figures = train_job(compose_config([*CONVNET, f"trainer.precision={precision}"]), tmp_path / precision)["train"]
    assert figures["loss"] < 0.5 * math.log(7), figures


def test_auto_precision_picks_bf16_where_supported():
    from runner.common.runtime import autocast_dtype

    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert autocast_dtype("auto", torch.device("cuda")) == expected


def test_fp16_scaler_state_is_checkpointed(tmp_path):
    from runner.common import checkpoint_files

    train_job(compose_config([*CONVNET, "trainer.precision=16", "trainer.epochs=1"]), tmp_path / "run")
    state = checkpoint_files.load(tmp_path / "run" / "checkpoints" / "epoch-0001.pt")
    assert state["scaler"]["scale"] > 0


def test_channels_last_and_compile_train_on_cuda(tmp_path):
    figures = train_job(compose_config([*CONVNET, "trainer.channels_last=true", "trainer.compile=true"]),
                        tmp_path / "run")["train"]
    assert figures["loss"] < 0.5 * math.log(7), figures


def test_a_batch_is_finished_on_the_gpu_as_on_the_cpu():
    from runner.data.batch_augment import Finish

    pixels = torch.randint(0, 256, (16, 40, 40, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    seeds = torch.arange(16) * 1009
    for augment in (True, False):
        finish = Finish((32, 32), (0.5, 0.4, 0.3), (0.2, 0.3, 0.4), augment)
        on_gpu = finish(pixels.cuda(), seeds)
        assert on_gpu.device.type == "cuda"
        torch.testing.assert_close(on_gpu.cpu(), finish(pixels, seeds), atol=1e-3, rtol=0)


@pytest.mark.parametrize("cache", ["device", "none"])
def test_uint8_batches_are_finished_on_the_gpu_and_train(tmp_path, monkeypatch, cache):
    """device: the split on the GPU, no loader; none: uint8 batches from the workers, pinned, finished on the GPU."""
    from runner.data import datasets, loaders
    from tests.conftest import make_imagefolder

    monkeypatch.setenv("RUNNER_CACHE", str(tmp_path / "cache"))
    root = make_imagefolder(tmp_path / "images", classes=3, per_class=8, size=(40, 52))
    overrides = ["dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=[16,16]", f"dataset.cache={cache}",
                 "dataset.augment=basic", "trainer.device=cuda", "trainer.batch_size=6", "trainer.epochs=2",
                 "trainer.num_workers=2", "evaluate.after_training=true"]
    cfg = compose_config(overrides)
    train = datasets.build_splits(cfg.dataset)["train"]
    loader, _ = loaders.train_loader(train, 6, seed=0, num_workers=0, pin_memory=True, device=torch.device("cuda"))
    x, y = next(iter(loader))
    x, y = loaders.on_device(x, torch.device("cuda")), y.cuda()
    assert x.device.type == "cuda" and x.dtype == torch.float32 and x.shape == (6, 3, 16, 16)
    train_job(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "epoch-0002.pt").exists()


@pytest.mark.slow
def test_runner_evaluate_on_cuda_of_runs_trained_with_every_source_of_batches(tmp_path, monkeypatch):
    """Issue 22 item 7: with dataset.cache=device the labels came on the GPU and every evaluation (after training,
    early stopping, pruning, runner.evaluate) crashed in the metrics. Each source of batches, trained on CUDA and
    evaluated after training, then by the command on a copy and every other way in-process: the same
    predictions as on the CPU, saved as CPU tensors (tests/test_evaluation_devices.py's checks)."""
    from tests.conftest import run_cli
    from tests.test_evaluation_devices import (
        assert_evaluated_as_on_the_cpu,
        copy_of,
        evaluate_everywhere,
        train_runs,
    )

    monkeypatch.setenv("RUNNER_CACHE", str(tmp_path / "cache"))
    runs = train_runs(tmp_path, ["trainer.device=cuda", "evaluate.after_training=true", "evaluate.device=cuda"])
    for source, run_dir in runs.items():
        assert (run_dir / "eval" / "best.json").is_file(), source  # the evaluation after training
        on_gpu = copy_of(run_dir, tmp_path / f"{run_dir.name}-cuda")
        command = run_cli([f"run_dir={on_gpu}", "device=cuda"], cwd=tmp_path, module="runner.evaluate")
        assert command.returncode == 0, f"{source}: {command.stdout[-2000:]}{command.stderr[-2000:]}"
        evaluate_everywhere(on_gpu, "cuda")
        on_cpu = copy_of(run_dir, tmp_path / f"{run_dir.name}-cpu")
        evaluate_everywhere(on_cpu, "cpu")
        assert_evaluated_as_on_the_cpu(on_gpu, on_cpu, atol=1e-3)
