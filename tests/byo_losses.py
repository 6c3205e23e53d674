"""Losses brought by the user: `python -m runner loss._target_=tests.byo_losses.focal +loss.gamma=2`.

Not part of runner: they stand for a user's own package (`my_project.losses`), to show the
contract of the loss group: (logits, targets) -> per-sample losses (N,) or their mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss (Lin et al. 2017), per sample: cross-entropy down-weighted where the model is sure."""
    log_p = F.log_softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)
    return -((1 - log_p.exp()) ** gamma) * log_p


def mean_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A loss that returns the batch mean, as most loss functions do."""
    return F.cross_entropy(logits, targets)


def per_class(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A mistake: one loss per sample and class, not per sample."""
    return F.cross_entropy(logits, targets, reduction="none")[:, None].expand_as(logits)


def always_class_0(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A planted bug: the targets are ignored (every sample is scored against class 0)."""
    return F.cross_entropy(logits, torch.zeros_like(targets), reduction="none")
