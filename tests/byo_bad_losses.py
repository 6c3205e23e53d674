"""Planted bugs in a user's own loss: `python -m runner.check loss._target_=tests.byo_bad_losses.negated ~loss.label_smoothing`.

Not part of runner: each stands for a mistake in a user's `my_project.losses` (issue 23), which
the checks must name: a loss of the wrong sign, and a loss clipped instead of the gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def negated(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A planted bug: the sign is wrong, so lowering it rewards wrong answers."""
    return -F.cross_entropy(logits, targets, reduction="none")


def clipped_at_1(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A planted bug: the loss, not the gradient, is clipped; every sample above 1.0 gives no gradient."""
    return F.cross_entropy(logits, targets, reduction="none").clamp(max=1.0)


def clipped_at_3(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The same bug that only drops the outliers (samples with loss above 3.0): every other check passes."""
    return F.cross_entropy(logits, targets, reduction="none").clamp(max=3.0)
