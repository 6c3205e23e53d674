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
    """runner's default (loss=cross_entropy): per-sample cross-entropy, with optional label smoothing."""
    return F.cross_entropy(logits, targets, reduction="none", label_smoothing=label_smoothing)


def build_loss(loss_cfg) -> Loss:
    return instantiate(loss_cfg)


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
