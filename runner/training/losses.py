"""The training loss: `python -m runner loss.label_smoothing=0.1`, or `loss._target_=my_project.losses.focal`.

A loss is a callable (logits, targets) -> per-sample losses of shape (N,), or their mean (a
scalar); conf/loss/ names it with `_partial_: true`, so its settings come bound. The loop sums
per-sample losses over a learning batch and divides by its size, which keeps accumulation and
several processes exact; a mean is turned back into a sum by the micro-batch's size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from runner.common.errors import UserError

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """runner's default (loss=cross_entropy): per-sample cross-entropy, with optional label smoothing. `targets`:
    class indices (N,) or, under dataset.mixup/cutmix, class probabilities (N, C) (smoothed the same way)."""
    return F.cross_entropy(logits, targets, reduction="none", label_smoothing=label_smoothing)


def build_loss(loss_cfg) -> Loss:
    if loss_cfg.get("_target_") == "runner.training.distill.distillation":  # loss=distill: its teachers loaded once
        from runner.training import distill

        return distill.build(loss_cfg)
    return instantiate(loss_cfg)


def refuse_loss_without_soft_targets(cfg) -> None:
    """With dataset.mixup or dataset.cutmix on, the loss is given (N, num_classes) probabilities instead of class
    indices: try the configured loss once on a tiny batch of them, before anything is written, and refuse in one
    line when it raises or returns something other than per-sample losses or their mean."""
    from runner.data.mixing import mixing_of

    if mixing_of(cfg.dataset) is None or cfg.loss.get("_target_") == "runner.training.distill.distillation":
        return  # distill's own cross-entropy takes them (and building it would load every teacher once more)
    loss = build_loss(cfg.loss)
    classes = int(cfg.dataset.num_classes)
    logits = torch.zeros(2, classes)
    targets = torch.full((2, classes), 1 / classes)
    try:
        value = loss(logits, targets)
        problem = None if isinstance(value, torch.Tensor) and tuple(value.shape) in ((), (2,)) else \
            f"returns {tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__} for 2 samples"
    except Exception as error:  # noqa: BLE001 (whatever a user's loss raises on them, it cannot take them)
        problem = f"raises {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")
    if problem is not None:
        name = cfg.loss.get("_target_", "?")
        raise UserError(f"the loss {name} cannot take the soft targets mixup/cutmix give (class probabilities, "
                        f"shape (N, {classes})): it {problem}. Fix: accept probability targets (F.cross_entropy "
                        "does), or dataset.mixup.alpha=0 dataset.cutmix.alpha=0")


def summed_loss(loss: Loss, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss summed over the micro-batch, from per-sample losses or their mean."""
    value = loss(logits, targets)
    n = len(targets)
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        return value * n
    if isinstance(value, torch.Tensor) and tuple(value.shape) == (n,):
        return value.sum()
    got = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"
    name = getattr(getattr(loss, "func", loss), "__qualname__", repr(loss))
    raise UserError(f"the loss {name} returned {got} for {n} samples. Fix: return the per-sample losses, "
                    f"shape ({n},), or their mean (a scalar tensor)")
