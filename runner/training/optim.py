"""Optimizers and learning-rate schedules: `python -m runner optimizer=sgd schedule=warmup_cosine`.

Optimizers are torch's own, built from `cfg.optimizer` (`_partial_: true`) once the parameters
exist, over parameter groups of their own learning rate and weight decay (param_groups.py). Schedules are written in epochs and stepped once per optimizer update: each schedule
below maps (epoch, total_epochs) to a factor of the optimizer's lr, where epoch is fractional
(update / updates_per_epoch), so a schedule means the same at any batch size.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.optim.lr_scheduler import LambdaLR

from runner.training.param_groups import parameter_groups


def constant(epoch: float, total_epochs: int) -> float:
    return 1.0


def step(epoch: float, total_epochs: int, step_epochs: float = 30, gamma: float = 0.1) -> float:
    return gamma ** math.floor(epoch / step_epochs)


def cosine(epoch: float, total_epochs: int, min_factor: float = 0.0) -> float:
    progress = min(epoch / total_epochs, 1.0)
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine(epoch: float, total_epochs: int, warmup_epochs: float = 5, min_factor: float = 0.0,
                  update_epochs: float = 0.0) -> float:
    """Linear warmup, then cosine decay. The update starting at `epoch` warms up to where it ends
    (`update_epochs`: one update's length in epochs), so the first update is not wasted at lr 0."""
    if epoch < warmup_epochs:
        return min((epoch + update_epochs) / warmup_epochs, 1.0)
    progress = min((epoch - warmup_epochs) / max(total_epochs - warmup_epochs, 1e-12), 1.0)
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def onecycle(epoch: float, total_epochs: int, pct_start: float = 0.3, div_factor: float = 25.0,
             final_div_factor: float = 1e4) -> float:
    """The shape of torch's OneCycleLR (cosine annealing), as a factor of the peak lr."""
    start, end = 1 / div_factor, 1 / (div_factor * final_div_factor)
    peak = pct_start * total_epochs
    if epoch < peak:
        return start + (1 - start) * 0.5 * (1 - math.cos(math.pi * epoch / peak))
    progress = min((epoch - peak) / max(total_epochs - peak, 1e-12), 1.0)
    return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress))


def linear(epoch: float, total_epochs: int, end_factor: float = 0.0) -> float:
    return 1.0 + (end_factor - 1.0) * min(epoch / total_epochs, 1.0)


def build_optimizer(cfg, model: torch.nn.Module, lr_mult: float = 1.0) -> torch.optim.Optimizer:
    """The configured optimizer over the trainable parameters, in groups of their own learning rate and weight
    decay (param_groups.py: optimizer.layer_decay, optimizer.no_decay_norm_and_bias, and finetune.lr_mult,
    which training passes and the checks leave at 1)."""
    settings = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    layer_decay = settings.pop("layer_decay", None)  # the groups' settings, not the torch optimizer's arguments
    no_decay_norm_and_bias = settings.pop("no_decay_norm_and_bias", True)
    make = instantiate(settings)
    return make(parameter_groups(model, settings["lr"], no_decay_norm_and_bias, layer_decay, lr_mult))


def depends_on_total_epochs(cfg, total: int, other_total: int, points: int = 256) -> bool:
    """Does the schedule's lr curve change when the run's total epochs do? (constant and step: no)."""
    factor: Callable[..., float] = instantiate(cfg)
    extra = {"update_epochs": 0.0} if "update_epochs" in inspect.signature(factor).parameters else {}
    longest = max(total, other_total)
    return any(not math.isclose(factor(epoch=e, total_epochs=total, **extra),
                                factor(epoch=e, total_epochs=other_total, **extra), rel_tol=1e-9, abs_tol=1e-12)
               for e in (longest * i / points for i in range(points + 1)))


def build_schedule(cfg, optimizer: torch.optim.Optimizer, updates_per_epoch: int, total_epochs: int) -> LambdaLR:
    """A LambdaLR stepped per update; its state_dict holds only counters (checkpoint-safe). It multiplies each
    parameter group's own initial lr (param_groups.py), so every group follows the schedule."""
    factor: Callable[..., float] = instantiate(cfg)
    # a schedule that asks for it learns one update's length in epochs (warmup_cosine does)
    extra = {"update_epochs": 1 / updates_per_epoch} if "update_epochs" in inspect.signature(factor).parameters else {}

    def lr_factor(update: int) -> float:
        return factor(epoch=update / updates_per_epoch, total_epochs=total_epochs, **extra)

    return LambdaLR(optimizer, lr_factor)
