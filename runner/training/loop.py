"""The training loop of `python -m runner`: the epochs (`fit`) and one optimizer update (`train_step`).

    fit                            resume, then for each epoch:
      train_one_epoch                for each learning batch of the epoch (learning_batches.py):
        train_step                     micro-batches: forward under autocast, backward; clip, step; the EMA
        report_interval                every trainer.log_every_steps updates (meter.py)
        stop_here                      a stop signal: a mid-epoch checkpoint, then Preempted
      end_of_epoch                   the epoch's figures; the SWA; its checkpoint when due, retention, the hooks

One learning batch (`trainer.batch_size` samples, one optimizer update) is made of micro-batches
(`trainer.micro_batch_size`). Each micro-batch's summed loss is divided by the number of samples in
its learning batch, so the accumulated gradient equals the gradient of the whole learning batch at
once, also for the last, smaller one of an epoch.

Figures (loss, accuracy, gradient norm, non-finite flags) are accumulated on the device and read
back only every `trainer.log_every_steps` updates: no host-device sync per micro-batch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from tqdm.contrib.logging import logging_redirect_tqdm

from runner.common import stop_signals
from runner.common.checkpoint_files import checkpoint_name, save_atomic
from runner.common.errors import UserError
from runner.common.stop_signals import Preempted, StopRequest
from runner.training import (
    averaging,
    checkpoint,
    finetune,
    histograms,
    light_checkpoints,
    progressive,
)
from runner.training.distributed import SINGLE, Processes, all_sum, any_process, gather
from runner.training.hooks import NO_HOOKS, Hooks
from runner.training.learning_batches import LearningBatch, learning_batches
from runner.training.meter import (
    IntervalMeter,
    log_plan,
    progress_bar,
    report_first_batch,
    report_interval,
)
from runner.training.state import Training, start, wrap_for_speed_and_processes
from runner.training.step import micro_batch_inputs, micro_batch_loss, trainable

log = logging.getLogger(__name__)


def fit(cfg, run_dir: Path, train_set, model: nn.Module, device: torch.device, writer, provenance: dict,
        resume_state: dict | None, processes: Processes = SINGLE, hooks: Hooks = NO_HOOKS) -> dict:
    """Train for cfg.trainer.epochs (continuing from resume_state); returns the last epoch's figures.

    With several processes, every one calls fit; rank 0 alone writes (writer is None elsewhere) and calls the hooks.
    """
    run = start(cfg, run_dir, train_set, model, device, writer, provenance, processes, hooks)
    start_epoch, first_sample = resume(run, resume_state)
    if start_epoch >= run.settings.epochs:
        log.info("the run has already finished (%d of %d epochs): nothing to do", start_epoch, run.settings.epochs)
        return {"epoch": start_epoch, "finished": True}
    if resume_state is not None and first_sample == 0 and early_stop(run, start_epoch):
        return {"epoch": start_epoch, "finished": True, "stopped_early": True}  # a rerun of a run that stopped early
    log_plan(run, start_epoch, len(train_set))
    log_averaging(run)
    watched = start_watching(run, fresh=resume_state is None)
    finetune.enter_stage(run, start_epoch, first=True)  # the parameters that train first: those DDP registers
    run.step_model = wrap_for_speed_and_processes(model, run.settings, processes, device)

    figures: dict = {}
    bar = progress_bar(run, start_epoch, first_sample)
    try:
        with stop_signals.caught(run.settings.stop_signals) as stop, logs_above(bar):
            for epoch in range(start_epoch, run.settings.epochs):
                size = image_size_of(run, epoch, first=epoch == start_epoch)
                figures = train_one_epoch(run, epoch, first_sample if epoch == start_epoch else 0, stop, bar, size,
                                          watched)
                if figures.get("stopped_early"):
                    break
    finally:
        bar.close()
    return figures


def resume(run: Training, resume_state: dict | None) -> tuple[int, int]:
    """The checkpoint's state put back; returns (the first epoch to train, the first sample in it)."""
    if resume_state is None:
        return 0, 0
    start_epoch, run.global_step = checkpoint.restore(resume_state, run.model, run.optimizer, run.schedule,
                                                      run.scaler, run.processes.rank, run.processes.world_size,
                                                      run.averages)
    return start_epoch, resume_state.get("epoch_samples", 0)  # a checkpoint from mid-epoch (a stop signal)


def log_averaging(run: Training) -> None:
    """Once a run: which averages of the weights it keeps (log and TensorBoard's text; nothing per update)."""
    line = averaging.describe(run.averages)
    if line is None:
        return
    log.info("%s", line)
    if run.writer is not None:
        run.writer.add_text("averaging", line, run.global_step)


def start_watching(run: Training, fresh: bool) -> histograms.Histograms:
    """Once a run: the plan's lines of checkpoint.every_updates and trainer.log_histograms_every, and a fresh
    run's initial weights as update-00000000.pt; returns the histograms to write (a no-op when off)."""
    for line in (light_checkpoints.describe(run.checkpoints.every_updates, run.checkpoints.keep_updates),
                 histograms.describe(run.settings.log_histograms_every)):
        if line is not None:
            log.info("%s", line)
    if fresh and run.checkpoints.every_updates is not None:
        light_checkpoints.write(run, epoch=0)
    return histograms.of(run)


def logs_above(bar) -> contextlib.AbstractContextManager:
    """On a terminal, log lines print above the progress bar instead of through it."""
    return logging_redirect_tqdm() if not bar.disable else contextlib.nullcontext()


def image_size_of(run: Training, epoch: int, first: bool) -> tuple[int, int] | None:
    """The epoch's training crop under trainer.progressive_resize (None: off), a pure function of the epoch (so a
    resume trains at the same size); logged where it changes, recorded in TensorBoard each epoch (its height)."""
    sizes = progressive.plan(run.settings.progressive_resize, run.settings.epochs, run.cfg.dataset.image_size)
    if sizes is None:
        return None
    if first or sizes[epoch] != sizes[epoch - 1]:
        log.info("epoch %d: training at %dx%d (progressive_resize)", epoch + 1, *sizes[epoch])
    if run.writer is not None:
        run.writer.add_scalar("train/image_size", sizes[epoch][0], run.global_step)
    return sizes[epoch]


def train_one_epoch(run: Training, epoch: int, skip: int, stop: StopRequest, bar,
                    size: tuple[int, int] | None = None, watched: histograms.Histograms = histograms.OFF) -> dict:
    """One pass over the epoch's learning batches (from sample `skip` on; its crops at `size`, None:
    dataset.image_size), then end_of_epoch's figures. `watched`: trainer.log_histograms_every's histograms."""
    started = time.perf_counter()
    settings, n = run.settings, run.samples_per_epoch
    run.sampler.set_epoch(epoch, skip)
    run.model.train()
    if finetune.enter_stage(run, epoch):  # the body unfrozen: DDP must register the parameters that now train
        run.step_model = wrap_for_speed_and_processes(run.model, settings, run.processes, run.device)
    meter = IntervalMeter(run.device)
    epoch_loss, epoch_correct = meter.zero.clone(), meter.zero.clone()
    bar.set_description(f"epoch {epoch + 1}/{settings.epochs}", refresh=False)
    for batch in learning_batches(run.loader, skip, n, settings.batch_size, run.processes, meter):
        watched.before_update(run.global_step)
        update = train_step(run, batch, size)
        watched.after_update(run.global_step)
        meter.add_update(update.loss, update.correct, update.samples, update.grad_norm)
        epoch_loss += update.loss
        epoch_correct += update.correct
        bar.update(1)

        epoch_done = batch.end == n
        if run.global_step % settings.log_every_steps == 0 or epoch_done:
            report_interval(run, meter.read(run, epoch), epoch, None if bar.disable else bar)
            meter.reset()
        if light_checkpoints.due(run.checkpoints.every_updates, run.global_step):  # weights only, rank 0
            light_checkpoints.write(run, epoch + epoch_done, 0 if epoch_done else batch.end)
        if not epoch_done and any_process(stop.received is not None, run.processes):
            stop_here(run, meter, epoch, batch.end, stop.received)
    return end_of_epoch(run, epoch, skip, epoch_loss, epoch_correct, time.perf_counter() - started)


class Update(NamedTuple):
    """One optimizer update's figures, left on the device (the meter reads them back once an interval)."""

    loss: torch.Tensor  # the summed per-sample loss of this process's share of the learning batch
    correct: torch.Tensor  # its correct predictions
    samples: int  # its samples
    grad_norm: torch.Tensor  # the gradient norm before clipping


def train_step(run: Training, batch: LearningBatch, size: tuple[int, int] | None = None) -> Update:
    """One optimizer update from one learning batch (its images at `size`: trainer.progressive_resize's), top to
    bottom. Nothing in the micro-batch loop waits for the device (but the run's first micro-batch, whose loss at
    init is logged): the figures stay on it."""
    model, optimizer, scaler, processes = run.step_model, run.optimizer, run.scaler, run.processes
    loss_sum, correct, samples = torch.zeros((), device=run.device), torch.zeros((), device=run.device), 0
    share = batch.size / processes.world_size  # DDP averages over processes: scale to the batch's mean
    for index, (x, y, last) in enumerate(batch.micro_batches):  # this process's share of the learning batch
        x, y = micro_batch_inputs(run, x, y, size, index)  # on the device, finished (augmented) at `size`
        # gradients are synchronized across processes once per learning batch, at its last micro-batch
        with model.no_sync() if processes.active and not last else contextlib.nullcontext():
            # the forward under autocast (amp_dtype); loss: the micro-batch's summed loss / the learning batch's size
            loss, micro_loss_sum, micro_correct = micro_batch_loss(model, x, y, share, run.loss, run.amp_dtype)
            scaler.scale(loss).backward()  # adds to .grad (fp16: scaled up, so small gradients do not vanish)
        if run.global_step == 0 and batch.start == 0 and samples == 0 and run.writer is not None:
            report_first_batch(run, x, micro_loss_sum, len(y))  # once a run: the batch, the loss at init
        loss_sum += micro_loss_sum
        correct += micro_correct
        samples += len(y)
    scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
    clip = math.inf if run.settings.grad_clip_norm is None else float(run.settings.grad_clip_norm)
    grad_norm = nn.utils.clip_grad_norm_(trainable(run.model), clip)
    scaler.step(optimizer)  # under fp16 skips the update when a gradient is inf/nan
    scaler.update()
    averaging.after_update(run.averages)  # trainer.ema: the average moves towards the updated weights
    run.schedule.step()  # the schedule counts updates
    optimizer.zero_grad(set_to_none=True)
    run.global_step += 1
    note_non_finite(run, loss_sum, grad_norm)
    return Update(loss_sum, correct, samples, grad_norm)


def note_non_finite(run: Training, loss_sum: torch.Tensor, grad_norm: torch.Tensor) -> None:
    """Remember the first update whose loss (or, outside fp16, gradient) was not finite, on the device; the
    meter's next read stops the run there. Under fp16 an inf gradient is the scaler's to skip, not an error."""
    finite = torch.isfinite(loss_sum) if run.fp16 else torch.isfinite(loss_sum) & torch.isfinite(grad_norm)
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


def end_of_epoch(run: Training, epoch: int, skip: int, loss: torch.Tensor, correct: torch.Tensor,
                 seconds: float) -> dict:
    """The epoch's figures (log, TensorBoard), then its checkpoint when one is due, and early stopping's word."""
    settings, trained = run.settings, run.samples_per_epoch - skip
    figures = {
        "epoch": epoch + 1,
        "loss": float(all_sum(loss, run.processes)) / trained,
        "accuracy": float(all_sum(correct, run.processes)) / trained,
        "seconds": seconds,
    }
    resumed = f" (resumed after {skip} samples)" if skip else ""
    log.info("epoch %d/%d%s: loss %.4f, accuracy %.1f%%, %.1f s (%.0f images/s)", epoch + 1, settings.epochs,
             resumed, figures["loss"], 100 * figures["accuracy"], seconds, trained / seconds)
    if run.writer is not None:
        run.writer.add_scalar("train/epoch_loss", figures["loss"], run.global_step)
        run.writer.add_scalar("train/epoch_accuracy", figures["accuracy"], run.global_step)
    averaging.at_epoch_end(run.averages, epoch + 1)  # trainer.swa: the epoch's weights, before its checkpoint
    if (epoch + 1) % run.checkpoints.every_epochs == 0 or epoch + 1 == settings.epochs:
        write_checkpoint(run, epoch + 1)
        figures["stopped_early"] = early_stop(run, epoch + 1)
    if run.writer is not None:
        run.writer.flush()
    return figures


def write_checkpoint(run: Training, epochs_done: int) -> None:
    """The epoch checkpoint (rank 0), retention, then the sweep's pruning report; never non-finite weights."""
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
    keep_last = run.checkpoints.keep_last
    if keep_last is not None:  # only then ask which checkpoint the evaluator ranks best
        checkpoint.prune(folder, keep_last, protect={path, run.hooks.best_so_far()} - {None})
    run.hooks.report_checkpoint(path, epochs_done)


def early_stop(run: Training, epochs_done: int) -> bool:
    """After a checkpoint: does trainer.early_stopping say stop? Rank 0 asks the evaluator; all agree."""
    if run.hooks.stop_early is None:
        return False
    why = None
    if run.processes.is_main:
        why = run.hooks.stop_reason(run.run_dir / "checkpoints" / checkpoint_name(epochs_done))
    if why:
        log.info("early stopping after epoch %d of %d: %s", epochs_done, run.settings.epochs, why)
    return any_process(why is not None, run.processes)


def all_rng_states(processes: Processes) -> list[dict] | None:
    """Under torchrun, every process's random streams for rank 0 to save (collective); None in one process."""
    return gather(checkpoint.rng_state(), processes) if processes.active else None
