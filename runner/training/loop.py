"""The training loop of `python -m runner`: accumulation, mixed precision, clipping, checkpoints.

One learning batch (`trainer.batch_size` samples, one optimizer update) is made of
micro-batches (`trainer.micro_batch_size`). Each micro-batch's summed loss is divided by the
number of samples in its learning batch, so the accumulated gradient equals the gradient of
the whole learning batch at once, also for the last, smaller one of an epoch.

Figures (loss, accuracy, gradient norm, non-finite flags) are accumulated on the device and
read back only every `trainer.log_every_steps` updates: no host-device sync per micro-batch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.contrib.logging import logging_redirect_tqdm

from runner import stop_signals
from runner.checkpoint_files import checkpoint_name, save_atomic
from runner.data.loaders import train_loader
from runner.data.transforms import channel_stats, denormalize
from runner.errors import UserError
from runner.models import has_batch_norm
from runner.runtime import autocast_dtype, random_state_kept
from runner.stop_signals import Preempted, StopRequest
from runner.training import checkpoint
from runner.training.distributed import SINGLE, Processes, all_sum, any_process, gather
from runner.training.learning_batches import learning_batches
from runner.training.losses import build_loss
from runner.training.meter import IntervalMeter, progress_bar, report_interval, update_plan
from runner.training.optim import build_optimizer, build_schedule
from runner.training.state import BestCheckpoint, OnCheckpoint, StopEarly, Training
from runner.training.step import micro_batch_loss, optimizer_update, to_device, trainable

log = logging.getLogger(__name__)




def fit(cfg, run_dir: Path, train_set, model: nn.Module, device: torch.device, writer, provenance: dict,
        resume_state: dict | None, on_checkpoint: OnCheckpoint | None = None, processes: Processes = SINGLE,
        best_checkpoint: BestCheckpoint | None = None, stop_early: StopEarly | None = None) -> dict:
    """Train for cfg.trainer.epochs (continuing from resume_state); returns the last epoch's figures.

    With several processes, every one calls fit; rank 0 alone writes (writer is None elsewhere).
    """
    run = start(cfg, run_dir, train_set, model, device, writer, provenance, processes)
    run.best_checkpoint, run.stop_early = best_checkpoint, stop_early
    start_epoch, first_sample = 0, 0
    if resume_state is not None:
        start_epoch, run.global_step = checkpoint.restore(resume_state, model, run.optimizer, run.schedule,
                                                          run.scaler, processes.rank, processes.world_size)
        first_sample = resume_state.get("epoch_samples", 0)  # a checkpoint from mid-epoch (a stop signal)
    if start_epoch >= cfg.trainer.epochs:
        log.info("the run has already finished (%d of %d epochs): nothing to do", start_epoch, cfg.trainer.epochs)
        return {"epoch": start_epoch, "finished": True}
    if resume_state is not None and first_sample == 0 and early_stop(run, start_epoch):
        return {"epoch": start_epoch, "finished": True, "stopped_early": True}  # a rerun of a run that stopped early
    log_plan(run, start_epoch, len(train_set))
    run.step_model = wrap_for_speed_and_processes(model, cfg.trainer, processes, device)

    figures: dict = {}
    run.bar = progress_bar(run, start_epoch, first_sample)
    try:
        with stop_signals.caught(cfg.trainer.stop_signals) as stop, \
                logging_redirect_tqdm() if not run.bar.disable else contextlib.nullcontext():  # logs above the bar
            for epoch in range(start_epoch, cfg.trainer.epochs):
                skip = first_sample if epoch == start_epoch else 0
                started = time.perf_counter()
                loss, correct = train_one_epoch(run, epoch, skip, stop)
                figures = end_of_epoch(run, epoch, skip, loss, correct, time.perf_counter() - started, on_checkpoint)
                if figures.get("stopped_early"):
                    break
    finally:
        run.bar.close()
    return figures


def start(cfg, run_dir: Path, train_set, model: nn.Module, device: torch.device, writer, provenance: dict,
          processes: Processes) -> Training:
    """The model on its device, the optimizer, the loader, the schedule (in updates) and the scaler."""
    trainer = cfg.trainer
    amp_dtype = autocast_dtype(trainer.precision, device, key="trainer.precision")
    model.to(device)
    if trainer.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optimizer, model)
    loader, sampler = train_loader(train_set, trainer.micro_batch_size, trainer.seed, trainer.num_workers,
                                   pin_memory=device.type == "cuda", batch_size=trainer.batch_size,
                                   rank=processes.rank, world_size=processes.world_size, device=device)
    updates_per_epoch = math.ceil(sampler.samples_per_epoch / trainer.batch_size)
    schedule = build_schedule(cfg.schedule, optimizer, updates_per_epoch, trainer.epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return Training(cfg, run_dir, model, model, build_loss(cfg.loss), optimizer, schedule, scaler, loader, sampler,
                    device, amp_dtype, processes, writer, provenance, first_bad_step=torch.full((), -1, dtype=torch.int64, device=device))


def log_plan(run: Training, start_epoch: int, dataset_size: int) -> None:
    trainer, world = run.cfg.trainer, run.processes.world_size
    if has_batch_norm(run.model) and trainer.micro_batch_size * world < trainer.batch_size:
        log.warning(
            "the model has BatchNorm and trainer.micro_batch_size=%d < trainer.batch_size=%d: "
            "normalization statistics see only the micro-batch", trainer.micro_batch_size, trainer.batch_size,
        )
    if run.samples_per_epoch < dataset_size:
        log.warning("%d processes: %d training samples per epoch are left out so each process gets as many",
                    world, dataset_size - run.samples_per_epoch)
    log.info("training %d samples for epochs %d..%d: %s, precision %s on %s", run.samples_per_epoch,
             start_epoch + 1, trainer.epochs, update_plan(trainer, run.samples_per_epoch, world),
             run.amp_dtype or "fp32", run.device)


def wrap_for_speed_and_processes(model: nn.Module, trainer, processes: Processes, device: torch.device) -> nn.Module:
    """DDP across processes (gradients averaged at the last micro-batch), then torch.compile if asked."""
    if processes.active:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(model) if trainer.compile else model


def train_one_epoch(run: Training, epoch: int, skip: int, stop: StopRequest) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass over the epoch's learning batches (from sample `skip` on); returns its summed loss and hits."""
    trainer, n = run.cfg.trainer, run.samples_per_epoch
    run.sampler.set_epoch(epoch, skip)
    run.model.train()
    meter = IntervalMeter(run.device)
    epoch_loss, epoch_correct = meter.zero.clone(), meter.zero.clone()
    run.bar.set_description(f"epoch {epoch + 1}/{trainer.epochs}", refresh=False)
    for window in learning_batches(run.loader, skip, n, trainer.batch_size, run.processes, meter):
        window_loss, correct, samples = accumulate_gradients(run, window)
        grad_norm = optimizer_update(run.optimizer, run.scaler, run.schedule, trainable(run.model),
                                     trainer.grad_clip_norm)
        run.global_step += 1
        note_non_finite(run, window_loss, grad_norm)
        meter.add_update(window_loss, correct, samples, grad_norm)
        epoch_loss += window_loss
        epoch_correct += correct
        run.bar.update(1)

        epoch_done = window.end == n
        if run.global_step % trainer.log_every_steps == 0 or epoch_done:
            report_interval(run, meter.read(run, epoch), epoch, None if run.bar.disable else run.bar)
            meter.reset()
        if not epoch_done and any_process(stop.received is not None, run.processes):
            stop_here(run, meter, epoch, window.end, stop.received)
    return epoch_loss, epoch_correct


def accumulate_gradients(run: Training, window) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Forward and backward over this process's micro-batches of one learning batch.

    Returns the summed loss and correct predictions (on the device) and the number of samples.
    """
    window_loss, window_correct = torch.zeros((), device=run.device), torch.zeros((), device=run.device)
    samples = 0
    share = window.size / run.processes.world_size  # DDP averages over processes: scale to the batch's mean
    for index, (x, y, last) in enumerate(window.micro_batches):
        x = to_device(x, run.device, run.cfg.trainer.channels_last)
        y = y.to(run.device, non_blocking=True)
        # gradients are synchronized across processes once per learning batch, at its last micro-batch
        sync = contextlib.nullcontext() if last or not run.processes.active else run.step_model.no_sync()
        with sync:
            loss, loss_sum, correct = micro_batch_loss(run.step_model, x, y, share, run.loss, run.amp_dtype)
            run.scaler.scale(loss).backward()
        if run.global_step == 0 and window.start == 0 and index == 0 and run.writer is not None:
            with random_state_kept():
                log_first_batch(run.writer, x.cpu(), *channel_stats(run.cfg.dataset))
            # the practice: check the loss at init (about -ln(1/C) for a fresh classifier)
            classes = run.cfg.dataset.num_classes
            log.info("loss at init %.4f (chance level -ln(1/%d) = %.4f)", loss_sum.item() / len(y), classes,
                     math.log(classes))
        window_loss += loss_sum
        window_correct += correct
        samples += len(y)
    return window_loss, window_correct, samples


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


def note_non_finite(run: Training, window_loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
    """Remember the first update whose loss (or, outside fp16, gradient) was not finite; no sync."""
    finite = torch.isfinite(window_loss) if run.fp16 else torch.isfinite(window_loss) & torch.isfinite(grad_norm)
    run.first_bad_step = torch.where(~finite & (run.first_bad_step < 0), run.global_step, run.first_bad_step)



def stop_here(run: Training, meter: IntervalMeter, epoch: int, epoch_samples: int, signal_name: str | None):
    """A stop signal: write a mid-epoch checkpoint after this update, then raise Preempted."""
    meter.read(run, epoch)  # raises on non-finite figures: never save non-finite weights
    path = run.run_dir / "checkpoints" / f"preempt-step-{run.global_step:08d}.pt"
    rng_by_rank = all_rng_states(run.processes)
    if run.processes.is_main:
        save_atomic({**run.state(epoch, rng_by_rank), "epoch_samples": epoch_samples}, path)
    raise Preempted(signal_name or "a stop signal in another process", str(path.relative_to(run.run_dir)),
                    run.global_step)


def end_of_epoch(run: Training, epoch: int, skip: int, loss: torch.Tensor, correct: torch.Tensor, seconds: float,
                 on_checkpoint: OnCheckpoint | None) -> dict:
    """The epoch's figures (log, TensorBoard), then its checkpoint when one is due."""
    trainer, trained = run.cfg.trainer, run.samples_per_epoch - skip
    figures = {
        "epoch": epoch + 1,
        "loss": float(all_sum(loss, run.processes)) / trained,
        "accuracy": float(all_sum(correct, run.processes)) / trained,
        "seconds": seconds,
    }
    resumed = f" (resumed after {skip} samples)" if skip else ""
    log.info("epoch %d/%d%s: loss %.4f, accuracy %.1f%%, %.1f s (%.0f images/s)", epoch + 1, trainer.epochs,
             resumed, figures["loss"], 100 * figures["accuracy"], seconds, trained / seconds)
    if run.writer is not None:
        run.writer.add_scalar("train/epoch_loss", figures["loss"], run.global_step)
        run.writer.add_scalar("train/epoch_accuracy", figures["accuracy"], run.global_step)
    if (epoch + 1) % run.cfg.checkpoint.every_epochs == 0 or epoch + 1 == trainer.epochs:
        write_checkpoint(run, epoch + 1, on_checkpoint)
        figures["stopped_early"] = early_stop(run, epoch + 1)
    if run.writer is not None:
        run.writer.flush()
    return figures


def early_stop(run: Training, epochs_done: int) -> bool:
    """After a checkpoint: does trainer.early_stopping say stop? Rank 0 asks the evaluator; all agree."""
    if run.stop_early is None:
        return False
    why = None
    if run.processes.is_main:
        with random_state_kept():  # the evaluation between updates must not draw from training's streams
            why = run.stop_early(run.run_dir / "checkpoints" / checkpoint_name(epochs_done))
    if why:
        log.info("early stopping after epoch %d of %d: %s", epochs_done, run.cfg.trainer.epochs, why)
    return any_process(why is not None, run.processes)


def all_rng_states(processes: Processes) -> list[dict] | None:
    """Under torchrun, every process's random streams for rank 0 to save (collective); None in one process."""
    return gather(checkpoint.rng_state(), processes) if processes.active else None


def write_checkpoint(run: Training, epochs_done: int, on_checkpoint: OnCheckpoint | None) -> None:
    """The epoch checkpoint (rank 0), then retention and the sweep's hook; never non-finite weights."""
    if not all(bool(torch.isfinite(p).all()) for p in run.model.parameters()):
        raise UserError(f"the weights are not finite after epoch {epochs_done}: no checkpoint written. "
                        "Fix: lower optimizer.lr or set trainer.grad_clip_norm")
    rng_by_rank = all_rng_states(run.processes)
    if not run.processes.is_main:
        return
    folder = run.run_dir / "checkpoints"
    path = folder / checkpoint_name(epochs_done)
    save_atomic(run.state(epochs_done, rng_by_rank), path)
    log.info("checkpoint %s", path.relative_to(run.run_dir))
    checkpoint.remove_preempted(folder)
    keep_last = run.cfg.checkpoint.keep_last
    if keep_last is not None:  # only then read which checkpoint the evaluator ranks best
        with random_state_kept():
            best = run.best_checkpoint() if run.best_checkpoint is not None else None
        checkpoint.prune(folder, keep_last, protect={path, best} - {None})
    if on_checkpoint is not None:
        with random_state_kept():  # a sweep's pruner evaluates the checkpoint in this process
            on_checkpoint(path, epochs_done)
