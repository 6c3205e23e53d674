"""A micro-batch's forward and loss, as `python -m runner`'s train_step (training/loop.py) computes them.

Shared by the training loop and the checks (`python -m runner.check`, `runner.lr_find`), so
that what the checks try is what training does.
"""

from __future__ import annotations

import torch
from torch import nn

from runner.data.datasets import stable_seed
from runner.data.loaders import on_device
from runner.training.losses import Loss, summed_loss


def images_to_device(x, device: torch.device, channels_last: bool, size: tuple[int, int] | None = None) -> torch.Tensor:
    """The model's input; `size`: the epoch's crop under trainer.progressive_resize (None: dataset.image_size)."""
    x = on_device(x, device, size)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def micro_batch_inputs(run, x, y, size: tuple[int, int] | None, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training loop's micro-batch number `index` of the update `run.global_step` as the model and the loss
    take it: images on the device at `size` (trainer.progressive_resize's; None: dataset.image_size), labels there;
    with dataset.mixup/cutmix, mixed (runner/data/mixing.py) from a seed of (trainer.seed, the update, the process,
    the micro-batch) alone, so any worker count, cache setting or resume mixes the same, and the labels become
    (N, num_classes) soft targets."""
    x, y = images_to_device(x, run.device, run.settings.channels_last, size), y.to(run.device, non_blocking=True)
    if run.mixing is not None:
        x, y = run.mixing(x, y, stable_seed(run.settings.seed, run.global_step, run.processes.rank, index))
    return x, y


def micro_batch_loss(model: nn.Module, x, y, window_size: int, loss: Loss, amp_dtype):
    """(loss to backpropagate, summed per-sample loss, correct predictions) of one micro-batch."""
    with torch.autocast(x.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        logits = model(x)
    if getattr(loss, "needs_inputs", False):  # loss=distill (training/distill.py): its teachers see these images
        loss = loss.with_inputs(x, amp_dtype)
    loss_sum = summed_loss(loss, logits.float(), y)
    # soft targets (dataset.mixup/cutmix): counted against the dominant label
    correct = (logits.argmax(dim=1) == (y.argmax(dim=1) if y.dim() == 2 else y)).sum()
    return loss_sum / window_size, loss_sum.detach(), correct


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
