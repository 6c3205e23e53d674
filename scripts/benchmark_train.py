"""python scripts/benchmark_train.py [--image-size 128] [--samples 256] [overrides ...]

Images/s of the runner's training loop against a bare loop (the same model, data, batch and
optimizer; forward, backward, step and nothing else), measured in the same process. The ratio
is the share of the machine's training speed the runner keeps: its own overhead per step
(data loading, accumulation bookkeeping, logging, progress) shows up as a ratio below 1.

Defaults to the flagship ConvNet at 128x128 on synthetic images (no download).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from torch.utils.tensorboard import SummaryWriter

from runner import models
from runner.config import register_configs
from runner.data import datasets
from runner.runtime import autocast_dtype, pick_device, seed_everything
from runner.training.loop import fit
from runner.training.optim import build_optimizer

CONF = Path(__file__).resolve().parents[1] / "conf"


def bare_loop_images_per_s(cfg, train_set, device, epochs: int) -> float:
    """Forward, backward, step over in-memory micro-batches; the last epoch is timed."""
    x_all = torch.stack([train_set[i][0] for i in range(len(train_set))]).to(device)
    y_all = torch.as_tensor([int(train_set[i][1]) for i in range(len(train_set))]).to(device)
    model = models.build(cfg.model).to(device)
    if cfg.trainer.channels_last:
        model.to(memory_format=torch.channels_last)
        x_all = x_all.contiguous(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optimizer, model)
    amp_dtype = autocast_dtype(cfg.trainer.precision, device)
    micro = cfg.trainer.micro_batch_size
    seconds = 0.0
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(y_all), device=device)
        for first in range(0, len(order), micro):
            index = order[first:first + micro]
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                loss = torch.nn.functional.cross_entropy(model(x_all[index]).float(), y_all[index])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return len(y_all) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3, help="the last one is timed")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. trainer.precision=bf16")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    register_configs()  # the settings schemas the conf/ files name, as `python -m runner` registers them
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[
            "dataset=synthetic", f"dataset.image_size=[{args.image_size},{args.image_size}]",
            f"dataset.train_size={args.samples}", "dataset.val_size=2", "dataset.test_size=2",
            "dataset.num_classes=102", "model=convnet", "trainer.batch_size=64", "trainer.micro_batch_size=32",
            f"trainer.epochs={args.epochs}", f"checkpoint.every_epochs={args.epochs}", *args.overrides,
        ])
    device = pick_device(str(cfg.trainer.device))
    seed_everything(0, False)
    train_set = datasets.build_splits(cfg.dataset)["train"]

    bare = bare_loop_images_per_s(cfg, train_set, device, args.epochs)
    with tempfile.TemporaryDirectory() as run_dir:
        writer = SummaryWriter(str(Path(run_dir) / "tb"))
        figures = fit(cfg, Path(run_dir), train_set, models.build(cfg.model), device, writer, {}, None)
        writer.close()
    ours = args.samples / figures["seconds"]

    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"precision {cfg.trainer.precision}, image {args.image_size}px, {args.samples} samples, "
          f"batch {cfg.trainer.batch_size} in micro-batches of {cfg.trainer.micro_batch_size}")
    print(f"bare loop : {bare:8.1f} images/s")
    print(f"runner    : {ours:8.1f} images/s")
    print(f"ratio     : {ours / bare:8.3f}  (runner / bare)")


if __name__ == "__main__":
    main()
