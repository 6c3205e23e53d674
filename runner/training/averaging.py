"""Averaged copies of the weights: `python -m runner trainer.ema.decay=0.999 trainer.swa.start_epoch=15`.

EMA (`trainer.ema`): an exponential moving average updated after every optimizer update (the loop's train_step),
    ema = decay_t * ema + (1 - decay_t) * weights,   decay_t = min(decay, (1 + t) / (10 + t))
with t the EMA updates done before this one, under trainer.ema.warmup (the default; TensorFlow's num_updates
warmup, as timm's ModelEma warmup: early averages do not drag the random init along); decay_t = decay without it.
It starts as a copy of the weights training starts from (the init, or the pretrained weights).
Under fp16 the gradient scaler skips an update whose gradients overflowed; the EMA is updated all the same (it
moves towards the unchanged weights): telling a skipped step apart would cost a host-device sync per update.

SWA (`trainer.swa`): the equal-weight mean of the weights at the end of the epochs start_epoch,
start_epoch + every_epochs, ... (1-based), as torch.optim.swa_utils.AveragedModel with its default avg_fn:
swa += (weights - swa) / (count + 1). Its BatchNorm statistics are not recomputed here: that pass would draw
batches from the training's data stream (and change every later epoch); the evaluator recomputes them offline
for the swa weights over the training split.

Both average the parameters and copy the buffers (BatchNorm's running statistics, its batch counter), as timm's
ModelEmaV3(exclude_buffers=True) does: an average of running statistics is not the statistics of averaged weights.
The copies are kept in fp32 on the training device, updated with torch._foreach ops on tensor lists gathered once
(the optimizer updates the parameters in place). Under torchrun every process holds the same weights after each
update (DDP), so every process averages identically, without communication, and rank 0 writes them.

A checkpoint (training/checkpoint.py) holds them as `averaged: {"ema": state_dict, "swa": state_dict}` (swa once
an epoch is averaged) and `averaging: {"ema": {"updates", "decay"}, "swa": {"count"}}`; the evaluator evaluates
each as its own `weights` row (raw | ema | swa). The checks and lr_find build their own training and ignore them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from runner.common.errors import UserError


@dataclass
class Average:
    """An fp32 copy of a model's state_dict, and the model's own tensors it follows."""

    weights: dict[str, torch.Tensor]  # the model's state_dict keys: what a checkpoint holds
    averaged: list[torch.Tensor]  # the copies of the parameters (averaged)
    parameters: list[torch.Tensor]  # the model's parameters, in the same order
    copied: list[torch.Tensor]  # the copies of the buffers (copied)
    buffers: list[torch.Tensor]


@dataclass
class Ema:
    decay: float
    warmup: bool
    average: Average
    updates: int = 0


@dataclass
class Swa:
    start_epoch: int
    every_epochs: int
    average: Average
    count: int = 0  # the epochs averaged so far


@dataclass
class Averages:
    """A run's averages (None: off), built by `build` from trainer.ema and trainer.swa."""

    ema: Ema | None = None
    swa: Swa | None = None


def follow(model: nn.Module) -> Average:
    """An fp32 copy of the model's state_dict, on its device, tied to the model's tensors."""
    weights, averaged, parameters, copied, buffers = {}, [], [], [], []
    for name, tensor in model.state_dict(keep_vars=True).items():
        source = tensor.detach()
        copy = source.clone().float() if source.is_floating_point() else source.clone()
        weights[name] = copy
        if isinstance(tensor, nn.Parameter):
            averaged.append(copy)
            parameters.append(source)
        else:
            copied.append(copy)
            buffers.append(source)
    return Average(weights, averaged, parameters, copied, buffers)


@torch.no_grad()
def move_towards(average: Average, weight: float) -> None:
    """averaged += weight * (parameters - averaged); the buffers copied."""
    if average.averaged:
        if all(p.dtype == torch.float32 for p in average.parameters):
            torch._foreach_lerp_(average.averaged, average.parameters, weight)
        else:  # a model in bf16 or fp16: lerp takes one dtype; add promotes to the fp32 average
            torch._foreach_mul_(average.averaged, 1.0 - weight)
            torch._foreach_add_(average.averaged, average.parameters, alpha=weight)
    if average.copied:
        torch._foreach_copy_(average.copied, average.buffers)


def new_ema(model: nn.Module, decay: float, warmup: bool = True) -> Ema:
    return Ema(decay, warmup, follow(model))


def ema_decay(ema: Ema) -> float:
    """The decay of the next update: warmed up over the first updates (see the module's docstring)."""
    if not ema.warmup:
        return ema.decay
    return min(ema.decay, (1 + ema.updates) / (10 + ema.updates))


def update_ema(ema: Ema) -> None:
    move_towards(ema.average, 1.0 - ema_decay(ema))
    ema.updates += 1


def new_swa(model: nn.Module, start_epoch: int, every_epochs: int = 1) -> Swa:
    return Swa(start_epoch, every_epochs, follow(model))


def swa_due(swa: Swa, epochs_done: int) -> bool:
    """Is the end of epoch `epochs_done` (1-based) one that the average takes?"""
    return epochs_done >= swa.start_epoch and (epochs_done - swa.start_epoch) % swa.every_epochs == 0


@torch.no_grad()
def update_swa(swa: Swa) -> None:
    if swa.count == 0:  # the first: the weights themselves (AveragedModel copies them)
        torch._foreach_copy_(swa.average.averaged + swa.average.copied, swa.average.parameters + swa.average.buffers)
    else:
        move_towards(swa.average, 1.0 / (swa.count + 1))
    swa.count += 1


def build(settings, model: nn.Module) -> Averages:
    """The averages trainer.ema and trainer.swa ask for (`settings`: TrainerSettings), from the model's weights
    now (on its device: call after the model is moved there)."""
    ema = None if settings.ema.decay is None else new_ema(model, settings.ema.decay, settings.ema.warmup)
    swa = None if settings.swa.start_epoch is None else new_swa(model, settings.swa.start_epoch,
                                                                settings.swa.every_epochs)
    return Averages(ema, swa)


def after_update(averages: Averages) -> None:
    """After each optimizer update: the EMA moves."""
    if averages.ema is not None:
        update_ema(averages.ema)


def at_epoch_end(averages: Averages, epochs_done: int) -> None:
    """After each epoch (before its checkpoint): the SWA takes the weights when the epoch is one of its."""
    if averages.swa is not None and swa_due(averages.swa, epochs_done):
        update_swa(averages.swa)


def describe(averages: Averages) -> str | None:
    """One line for the log at the start; None when nothing is averaged."""
    parts = []
    if averages.ema is not None:
        parts.append(f"ema (decay {averages.ema.decay:g}, {'warmup' if averages.ema.warmup else 'no warmup'}, "
                     "every update)")
    if averages.swa is not None:
        every = averages.swa.every_epochs
        parts.append(f"swa (from epoch {averages.swa.start_epoch}, every {'epoch' if every == 1 else f'{every} epochs'}"
                     "; BatchNorm statistics recomputed by the evaluator)")
    return f"weight averaging: {' and '.join(parts)}" if parts else None


def checkpoint_parts(averages: Averages) -> dict:
    """{"averaged": {...}, "averaging": {...}} for a checkpoint; {} when nothing is averaged."""
    averaged, averaging = {}, {}
    if averages.ema is not None:
        averaged["ema"] = averages.ema.average.weights
        averaging["ema"] = {"updates": averages.ema.updates, "decay": float(averages.ema.decay)}
    if averages.swa is not None:
        if averages.swa.count:
            averaged["swa"] = averages.swa.average.weights
        averaging["swa"] = {"count": averages.swa.count}
    return {"averaged": averaged, "averaging": averaging} if averaging else {}


@torch.no_grad()
def restore(averages: Averages, state: dict) -> None:
    """Put a checkpoint's averages back (in place: the lists `follow` gathered stay valid). A checkpoint written
    without the average this run keeps (an older runner's, which had no such setting) is refused."""
    averaged, counts = state.get("averaged") or {}, state.get("averaging") or {}
    if averages.ema is not None:
        if "ema" not in counts:
            raise UserError("the checkpoint has no trainer.ema average (it was written without one): the run cannot "
                            "go on averaging from where it stopped. Fix: trainer.ema.decay=null to resume it, or "
                            "train with the EMA in a new run folder")
        load_into(averages.ema.average, averaged["ema"])
        averages.ema.updates = int(counts["ema"]["updates"])
    if averages.swa is not None:
        if "swa" not in counts:
            raise UserError("the checkpoint has no trainer.swa average (it was written without one): the run cannot "
                            "go on averaging from where it stopped. Fix: trainer.swa.start_epoch=null to resume it, "
                            "or train with SWA in a new run folder")
        averages.swa.count = int(counts["swa"]["count"])
        if averages.swa.count:
            load_into(averages.swa.average, averaged["swa"])


def load_into(average: Average, saved: dict[str, torch.Tensor]) -> None:
    for name, tensor in average.weights.items():
        tensor.copy_(saved[name])
