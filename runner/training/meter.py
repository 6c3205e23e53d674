"""What a training run of `python -m runner` reports: the plan, the first batch, the progress bar, each log
interval's figures.

The figures of an interval (every `trainer.log_every_steps` updates): sums stay on the device and are
read back once per interval (`read`, the one host-device sync of the loop); counts and times stay on
the host. `read` also stops the run at the first non-finite loss or gradient, before any checkpoint
could save such weights.
"""

from __future__ import annotations

import logging
import math
import sys
import time

import torch
from tqdm import tqdm

from runner.common.errors import UserError
from runner.common.runtime import random_state_kept
from runner.data.mixing import mixing_of
from runner.data.transforms import channel_stats, denormalize
from runner.models import has_batch_norm
from runner.training.distributed import all_sum

log = logging.getLogger(__name__)


class IntervalMeter:
    def __init__(self, device: torch.device):
        self.zero = torch.zeros((), device=device)
        self.reset()

    def reset(self) -> None:
        self.loss, self.correct = self.zero.clone(), self.zero.clone()
        self.grad_norm, self.skipped = self.zero.clone(), self.zero.clone()
        self.samples, self.updates, self.data_wait = 0, 0, 0.0
        self.start = time.perf_counter()

    def add_update(self, loss: torch.Tensor, correct: torch.Tensor, samples: int, grad_norm: torch.Tensor) -> None:
        """One learning batch: its summed loss and hits (this process), and the update's gradient norm."""
        finite = torch.isfinite(grad_norm)
        self.loss += loss
        self.correct += correct
        self.samples += samples
        self.grad_norm += torch.where(finite, grad_norm, 0.0)
        self.skipped += ~finite  # under fp16 the scaler skips such updates
        self.updates += 1

    def read(self, run, epoch: int) -> dict:
        """The interval's figures on the host, summed over processes; a UserError at a non-finite step."""
        processes = run.processes
        first_bad_step = run.first_bad_step
        if processes.active:  # sums over every process; the first bad step of any of them
            self.loss, self.correct = all_sum(self.loss, processes), all_sum(self.correct, processes)
            self.samples = int(all_sum(torch.tensor(float(self.samples), device=self.loss.device), processes))
            never = torch.iinfo(torch.int64).max
            bad = torch.where(first_bad_step < 0, never, first_bad_step)
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MIN)
            first_bad_step = torch.where(bad == never, -1, bad)
        bad_step = int(first_bad_step.item())
        if bad_step >= 0:
            raise UserError(
                f"the loss or gradient norm became non-finite at step {bad_step} (epoch {epoch + 1}); "
                "the run stops and writes no checkpoint with these weights. Fix: lower optimizer.lr, set "
                "trainer.grad_clip_norm=1.0, or check the data for NaN/inf values"
            )
        seconds = max(time.perf_counter() - self.start, 1e-9)
        skipped = int(self.skipped.item())
        applied = self.updates - skipped  # the GradScaler's skipped updates have no gradient norm to average
        figures = {
            "loss": self.loss.item() / max(self.samples, 1),
            "accuracy": self.correct.item() / max(self.samples, 1),
            "lr": run.schedule.get_last_lr()[0],
            "grad_norm": self.grad_norm.item() / applied if applied else math.nan,
            "images_per_s": self.samples / seconds,
            "data_wait_fraction": self.data_wait / seconds,
        }
        if run.fp16:
            figures["grad_scale"] = run.scaler.get_scale()
            figures["skipped_steps"] = skipped
        return figures


def report_interval(run, figures: dict, epoch: int, bar) -> None:
    """One interval's figures to TensorBoard, and to the progress bar (a terminal) or the log."""
    if run.writer is not None:
        for name, value in {**figures, **part_learning_rates(run.optimizer)}.items():
            run.writer.add_scalar(f"train/{name}", value, run.global_step)
    if bar is not None:
        bar.set_postfix(loss=f"{figures['loss']:.4f}", lr=f"{figures['lr']:.2e}",
                        img_s=f"{figures['images_per_s']:.0f}")
    else:
        log.info("step %d (epoch %d): loss %.4f, accuracy %.1f%%, lr %.3g, %.0f images/s", run.global_step,
                 epoch + 1, figures["loss"], 100 * figures["accuracy"], figures["lr"], figures["images_per_s"])


def part_learning_rates(optimizer) -> dict[str, float]:
    """{"lr/head": ..., "lr/body": ...} (or "lr/layer_3"): each part's learning rate where the parts differ
    (finetune.lr_mult, optimizer.layer_decay); its groups with and without weight decay share it."""
    rates = {"lr/" + group["name"].split(",")[0].replace(" ", "_"): group["lr"] for group in optimizer.param_groups}
    return rates if len(set(rates.values())) > 1 else {}


def log_plan(run, start_epoch: int, dataset_size: int) -> None:
    """What the run will do (samples, epochs, updates, precision, device), and what it will not (left-out samples)."""
    settings, world = run.settings, run.processes.world_size
    if has_batch_norm(run.model) and settings.micro_batch_size * world < settings.batch_size:
        log.warning(
            "the model has BatchNorm and trainer.micro_batch_size=%d < trainer.batch_size=%d: "
            "normalization statistics see only the micro-batch", settings.micro_batch_size, settings.batch_size,
        )
    if run.samples_per_epoch < dataset_size:
        log.warning("%d processes: %d training samples per epoch are left out so each process gets as many",
                    world, dataset_size - run.samples_per_epoch)
    log.info("training %d samples for epochs %d..%d: %s, precision %s on %s", run.samples_per_epoch,
             start_epoch + 1, settings.epochs, update_plan(settings, run.samples_per_epoch, world),
             run.amp_dtype or "fp32", run.device)


def update_plan(trainer, samples: int, world: int) -> str:
    """'N updates per epoch of B samples (M micro-batches of m in each of P processes)', true to a small set."""
    batch = min(trainer.batch_size, samples)
    updates = math.ceil(samples / trainer.batch_size)
    micro_batches = math.ceil(batch / (trainer.micro_batch_size * world))
    plan = (f"{updates} update{'s' if updates != 1 else ''} per epoch of {batch} samples ({micro_batches} "
            f"micro-batch{'es' if micro_batches != 1 else ''} of {trainer.micro_batch_size} in each of {world} "
            f"process{'es' if world != 1 else ''})")
    if trainer.batch_size > samples:
        plan += f"; trainer.batch_size={trainer.batch_size} is more than the {samples} training samples"
    return plan


def progress_bar(run, start_epoch: int, first_sample: int) -> tqdm:
    """One bar for the whole run, so its ETA is the run's (on a terminal, on rank 0)."""
    trainer = run.cfg.trainer
    per_epoch = math.ceil(run.samples_per_epoch / trainer.batch_size)
    return tqdm(total=per_epoch * trainer.epochs, initial=per_epoch * start_epoch + first_sample // trainer.batch_size,
                disable=not (sys.stderr.isatty() and run.processes.is_main), unit="update", dynamic_ncols=True,
                desc=f"epoch {start_epoch + 1}/{trainer.epochs}", leave=False)


def report_first_batch(run, x: torch.Tensor, loss_sum: torch.Tensor, samples: int) -> None:
    """Once a run, at its first micro-batch (rank 0): the batch as the model sees it, and the loss at init."""
    with random_state_kept():
        log_first_batch(run.writer, x.cpu(), *channel_stats(run.cfg.dataset))
    # the practice: check the loss at init (about -ln(1/C) for a fresh classifier)
    classes = run.cfg.dataset.num_classes
    log.info("loss at init %.4f (chance level -ln(1/%d) = %.4f)", loss_sum.item() / samples, classes,
             math.log(classes))
    if mixing_of(run.cfg.dataset) is not None:  # the targets are soft: say what train/accuracy counts
        log.info("train accuracy: accuracy (dominant label, mixup/cutmix), the larger share of each mixed image")
        run.writer.add_text("train/accuracy", "accuracy (dominant label, mixup/cutmix)", 0)


FIRST_BATCH_IMAGES = 16  # enough to look at; 64 made a 3 MB event that TensorBoard checksums in pure Python


def log_first_batch(writer, x: torch.Tensor, mean, std) -> None:
    """The first training batch as the model sees it (de-normalized for display), once a run."""
    images = denormalize(x[:FIRST_BATCH_IMAGES].nan_to_num(0), mean, std)
    writer.add_image("train/first_batch", image_grid(images, per_row=4), 0)


def image_grid(images: torch.Tensor, per_row: int, pad: int = 2) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> one (3, rows, columns) image on white, like torchvision's make_grid
    (whose import, a second, is not worth one picture)."""
    n, channels, height, width = images.shape
    rows = math.ceil(n / per_row)
    grid = torch.ones(3, rows * (height + pad) + pad, per_row * (width + pad) + pad)
    for index, image in enumerate(images.expand(n, 3, height, width) if channels == 1 else images):
        top, left = pad + (index // per_row) * (height + pad), pad + (index % per_row) * (width + pad)
        grid[:, top:top + height, left:left + width] = image
    return grid
