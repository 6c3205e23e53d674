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
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from tqdm import tqdm

from runner import checkpoint_files
from runner.data import loaders, transforms
from runner.errors import UserError
from runner.models import has_batch_norm
from runner.runtime import autocast_dtype
from runner.training import checkpoint
from runner.training.distributed import SINGLE, Processes, all_sum, any_process
from runner.training.optim import build_optimizer, build_schedule
from runner.training.preemption import Preempted, StopRequest

log = logging.getLogger(__name__)




def to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def micro_batch_loss(model: nn.Module, x, y, window_size: int, label_smoothing: float, amp_dtype):
    """(loss to backpropagate, summed per-sample loss, correct predictions) of one micro-batch."""
    with torch.autocast(x.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        logits = model(x)
    loss_sum = F.cross_entropy(logits.float(), y, reduction="sum", label_smoothing=label_smoothing)
    correct = (logits.argmax(dim=1) == y).sum()
    return loss_sum / window_size, loss_sum.detach(), correct


def checkpoint_state(cfg, model, optimizer, schedule, scaler, epoch: int, global_step: int, provenance: dict) -> dict:
    return {
        "format_version": checkpoint_files.FORMAT_VERSION,
        "epoch": epoch,
        "global_step": global_step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": checkpoint.rng_state(),
        "config": OmegaConf.to_container(cfg, resolve=True),
        # plain JSON types only, so the file loads with weights_only=True
        "provenance": json.loads(json.dumps(provenance, default=str)),
    }


def restore(state: dict, model, optimizer, schedule, scaler) -> tuple[int, int]:
    """Load a checkpoint's full state (RNG last); returns (completed epochs, global step)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    scaler.load_state_dict(state["scaler"])
    checkpoint.set_rng_state(state["rng"])
    return state["epoch"], state["global_step"]


def optimizer_update(optimizer, scaler, schedule, params, clip: float) -> torch.Tensor:
    """One update from the accumulated gradients; returns the gradient norm before clipping."""
    scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
    grad_norm = nn.utils.clip_grad_norm_(params, clip)
    scaler.step(optimizer)  # under fp16 skips the update when a gradient is inf/nan
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    schedule.step()
    return grad_norm


def all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def changed_settings(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config containers."""
    keys = sorted(set(old) | set(new))
    changes = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += changed_settings(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return changes


def fit(cfg, run_dir: Path, train_set, model: nn.Module, device: torch.device, writer, provenance: dict,
        resume_state: dict | None, on_checkpoint: Callable[[Path, int], None] | None = None,
        processes: Processes = SINGLE) -> dict:
    """Train for cfg.trainer.epochs (continuing from resume_state); returns the last epoch's figures.

    on_checkpoint(path, epoch) runs after each checkpoint is written (a sweep's pruning hook).
    With several processes, every one calls fit; rank 0 alone writes (writer is None elsewhere).
    """
    trainer = cfg.trainer
    amp_dtype = autocast_dtype(trainer.precision, device, key="trainer.precision")
    model.to(device)
    if trainer.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optimizer, model)
    batch_size, micro_batch_size, world = trainer.batch_size, trainer.micro_batch_size, processes.world_size
    loader, sampler = loaders.train_loader(train_set, micro_batch_size, trainer.seed, trainer.num_workers,
                                        pin_memory=device.type == "cuda", batch_size=batch_size,
                                        rank=processes.rank, world_size=world)
    n_samples = sampler.samples_per_epoch  # all processes together
    updates_per_epoch = math.ceil(n_samples / batch_size)
    schedule = build_schedule(cfg.schedule, optimizer, updates_per_epoch, trainer.epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    checkpoint_dir = run_dir / "checkpoints"

    start_epoch, global_step, skip = 0, 0, 0
    if resume_state is not None:
        start_epoch, global_step = restore(resume_state, model, optimizer, schedule, scaler)
        skip = resume_state.get("epoch_samples", 0)  # a checkpoint from mid-epoch (a stop signal)
    if start_epoch >= trainer.epochs:
        log.info("the run has already finished (%d of %d epochs): nothing to do", start_epoch, trainer.epochs)
        return {"epoch": start_epoch, "finished": True}

    if has_batch_norm(model) and micro_batch_size * world < batch_size:
        log.warning(
            "the model has BatchNorm and trainer.micro_batch_size=%d < trainer.batch_size=%d: "
            "normalization statistics see only the micro-batch", micro_batch_size, batch_size,
        )
    if n_samples < len(train_set):
        log.warning("%d processes: %d training samples per epoch are left out so each process gets as many",
                    world, len(train_set) - n_samples)
    log.info(
        "training %d samples for epochs %d..%d: %d updates per epoch of %d samples (%d micro-batches of %d "
        "in each of %d processes), precision %s on %s", n_samples, start_epoch + 1, trainer.epochs,
        updates_per_epoch, batch_size, batch_size // (micro_batch_size * world), micro_batch_size, world,
        amp_dtype or "fp32", device,
    )

    step_model = model
    if processes.active:
        from torch.nn.parallel import DistributedDataParallel

        step_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if trainer.compile:
        step_model = torch.compile(step_model)
    params = [p for p in model.parameters() if p.requires_grad]
    clip = float(trainer.grad_clip_norm) if trainer.grad_clip_norm is not None else math.inf
    smoothing = cfg.loss.label_smoothing
    fp16 = amp_dtype == torch.float16
    show_bar = sys.stderr.isatty() and processes.is_main
    mean, std = transforms.channel_stats(cfg.dataset)
    stop = StopRequest(list(trainer.stop_signals))

    # device-side accumulators, read at log points only
    zero = torch.zeros((), device=device)
    first_bad_step = torch.full((), -1, dtype=torch.int64, device=device)
    epoch_figures: dict = {}
    try:
        for epoch in range(start_epoch, trainer.epochs):
            epoch_start_sample = skip if epoch == start_epoch else 0
            sampler.set_epoch(epoch, epoch_start_sample)
            model.train()
            interval = new_interval(zero)
            epoch_loss, epoch_correct = zero.clone(), zero.clone()
            interval_start = epoch_start = time.perf_counter()
            bar = tqdm(total=updates_per_epoch, initial=epoch_start_sample // batch_size, disable=not show_bar,
                       desc=f"epoch {epoch + 1}/{trainer.epochs}", leave=False, dynamic_ncols=True)
            window_start, window_loss, in_window = epoch_start_sample, zero.clone(), 0
            iterator = iter(loader)
            while True:
                wait_start = time.perf_counter()
                try:
                    x, y = next(iterator)
                except StopIteration:
                    break
                interval["data_wait"] += time.perf_counter() - wait_start
                window_size = min(batch_size, n_samples - window_start)  # the whole learning batch
                in_window += len(y)
                last = in_window == len(range(processes.rank, window_size, world))  # this process's share done
                x, y = to_device(x, device, trainer.channels_last), y.to(device, non_blocking=True)
                # DDP averages gradients over processes: scale by world to get the learning batch's mean
                sync = contextlib.nullcontext() if last or not processes.active else step_model.no_sync()
                with sync:
                    loss, loss_sum, correct = micro_batch_loss(step_model, x, y, window_size / world, smoothing,
                                                               amp_dtype)
                    scaler.scale(loss).backward()
                if global_step == 0 and window_start == 0 and writer is not None and in_window == len(y):
                    log_first_batch(writer, x.cpu(), mean, std)
                    # the practice: check the loss at init (about -ln(1/C) for a fresh classifier)
                    log.info("loss at init %.4f (chance level -ln(1/%d) = %.4f)", loss_sum.item() / len(y),
                             cfg.dataset.num_classes, math.log(cfg.dataset.num_classes))
                window_loss += loss_sum
                epoch_correct += correct
                interval["correct"] += correct
                interval["samples"] += len(y)
                if not last:
                    continue  # more micro-batches to accumulate into this learning batch

                grad_norm = optimizer_update(optimizer, scaler, schedule, params, clip)
                global_step += 1
                grad_finite = torch.isfinite(grad_norm)
                bad = ~torch.isfinite(window_loss) if fp16 else ~(torch.isfinite(window_loss) & grad_finite)
                first_bad_step = torch.where(bad & (first_bad_step < 0), global_step, first_bad_step)
                interval["loss"] += window_loss
                interval["grad_norm"] += torch.where(grad_finite, grad_norm, 0.0)
                interval["skipped"] += (~grad_finite).float()
                interval["updates"] += 1
                epoch_loss += window_loss
                window_start, window_loss, in_window = window_start + window_size, zero.clone(), 0
                bar.update(1)

                end_of_epoch = window_start == n_samples
                if global_step % trainer.log_every_steps == 0 or end_of_epoch:
                    figures = read_interval(interval, interval_start, first_bad_step, global_step, epoch, schedule,
                                            scaler, fp16, processes)
                    if writer is not None:
                        write_interval(writer, figures, global_step)
                    if show_bar:
                        bar.set_postfix(loss=f"{figures['loss']:.4f}", lr=f"{figures['lr']:.2e}",
                                        img_s=f"{figures['images_per_s']:.0f}")
                    else:
                        log.info("step %d (epoch %d): loss %.4f, accuracy %.1f%%, lr %.3g, %.0f images/s",
                                 global_step, epoch + 1, figures["loss"], 100 * figures["accuracy"], figures["lr"],
                                 figures["images_per_s"])
                    interval = new_interval(zero)
                    interval_start = time.perf_counter()
                if not end_of_epoch and any_process(stop.received is not None, processes, device):
                    read_interval(interval, interval_start, first_bad_step, global_step, epoch, schedule, scaler,
                                  fp16, processes)  # never save non-finite weights
                    path = checkpoint_dir / f"preempt-step-{global_step:08d}.pt"
                    if processes.is_main:
                        state = checkpoint_state(cfg, model, optimizer, schedule, scaler, epoch, global_step, provenance)
                        checkpoint_files.save_atomic({**state, "epoch_samples": window_start}, path)
                    raise Preempted(stop.received or "a stop signal in another process",
                                    str(path.relative_to(run_dir)), global_step)
            bar.close()

            trained = n_samples - epoch_start_sample
            seconds = time.perf_counter() - epoch_start
            epoch_figures = {
                "epoch": epoch + 1,
                "loss": float(all_sum(epoch_loss, processes)) / trained,
                "accuracy": float(all_sum(epoch_correct, processes)) / trained,
                "seconds": seconds,
            }
            resumed = f" (resumed after {epoch_start_sample} samples)" if epoch_start_sample else ""
            log.info("epoch %d/%d%s: loss %.4f, accuracy %.1f%%, %.1f s (%.0f images/s)", epoch + 1, trainer.epochs,
                     resumed, epoch_figures["loss"], 100 * epoch_figures["accuracy"], seconds, trained / seconds)
            if writer is not None:
                writer.add_scalar("train/epoch_loss", epoch_figures["loss"], global_step)
                writer.add_scalar("train/epoch_accuracy", epoch_figures["accuracy"], global_step)

            if (epoch + 1) % cfg.checkpoint.every_epochs == 0 or epoch + 1 == trainer.epochs:
                if not all_finite(model):
                    raise UserError(f"the weights are not finite after epoch {epoch + 1}: no checkpoint written. "
                                    "Fix: lower optimizer.lr or set trainer.grad_clip_norm")
                path = checkpoint_dir / checkpoint_files.checkpoint_name(epoch + 1)
                if processes.is_main:
                    state = checkpoint_state(cfg, model, optimizer, schedule, scaler, epoch + 1, global_step, provenance)
                    checkpoint_files.save_atomic(state, path)
                    log.info("checkpoint %s", path.relative_to(run_dir))
                    checkpoint.remove_preempted(checkpoint_dir)
                    checkpoint.prune(checkpoint_dir, cfg.checkpoint.keep_last, protect=path)
                    if on_checkpoint is not None:
                        on_checkpoint(path, epoch + 1)
            if writer is not None:
                writer.flush()
    finally:
        stop.restore()
    return epoch_figures


def new_interval(zero: torch.Tensor) -> dict:
    """Accumulators of one log interval: tensors stay on the device, counts and times on the host."""
    return {"loss": zero.clone(), "correct": zero.clone(), "grad_norm": zero.clone(), "skipped": zero.clone(),
            "samples": 0, "updates": 0, "data_wait": 0.0}


def read_interval(interval, interval_start, first_bad_step, global_step, epoch, schedule, scaler, fp16,
                  processes: Processes = SINGLE) -> dict:
    """Bring one log interval's figures to the host (the one sync point) and stop on non-finite ones."""
    if processes.active:  # sums over every process; the first bad step of any of them
        for key in ("loss", "correct"):
            interval[key] = all_sum(interval[key], processes)
        interval["samples"] = int(all_sum(torch.tensor(float(interval["samples"]), device=interval["loss"].device),
                                          processes))
        bad = torch.where(first_bad_step < 0, torch.iinfo(torch.int64).max, first_bad_step)
        torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MIN)
        first_bad_step = torch.where(bad == torch.iinfo(torch.int64).max, -1, bad)
    bad_step = int(first_bad_step.item())
    if bad_step >= 0:
        raise UserError(
            f"the loss or gradient norm became non-finite at step {bad_step} (epoch {epoch + 1}); "
            "the run stops and writes no checkpoint with these weights. Fix: lower optimizer.lr, set "
            "trainer.grad_clip_norm=1.0, or check the data for NaN/inf values"
        )
    seconds = max(time.perf_counter() - interval_start, 1e-9)
    updates = max(interval["updates"], 1)
    figures = {
        "loss": interval["loss"].item() / max(interval["samples"], 1),
        "accuracy": interval["correct"].item() / max(interval["samples"], 1),
        "lr": schedule.get_last_lr()[0],
        "grad_norm": interval["grad_norm"].item() / updates,
        "images_per_s": interval["samples"] / seconds,
        "data_wait_fraction": interval["data_wait"] / seconds,
    }
    if fp16:
        figures["grad_scale"] = scaler.get_scale()
        figures["skipped_steps"] = interval["skipped"].item()
    return figures


def write_interval(writer, figures: dict, global_step: int) -> None:
    for name, value in figures.items():
        writer.add_scalar(f"train/{name}", value, global_step)


def log_first_batch(writer, x: torch.Tensor, mean, std) -> None:
    """The first training batch as the model sees it (de-normalized for display)."""
    from torchvision.utils import make_grid

    images = transforms.denormalize(x[:64].nan_to_num(0), mean, std)
    writer.add_image("train/first_batch", make_grid(images, nrow=8, pad_value=1.0), 0)
