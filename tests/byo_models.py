"""A model brought by the user, as `model._target_=tests.byo_models.tiny +model.width=3` names it.

Not part of runner: it stands for a user's own package, to show that a `_target_` of one's own,
with arguments runner has never heard of, composes, validates and trains.
"""

from __future__ import annotations

from torch import nn


def tiny(num_classes: int, in_channels: int, image_size, width: int = 4) -> nn.Module:
    """Flatten, one hidden layer of `width` units, the classes."""
    height, breadth = (image_size, image_size) if isinstance(image_size, int) else image_size
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * height * breadth, width), nn.ReLU(),
                         nn.Linear(width, num_classes))


class SlowToEvaluate(nn.Module):
    """tiny, whose forward in eval mode sleeps: an evaluation that takes longer than a collective's timeout."""

    def __init__(self, num_classes: int, in_channels: int, image_size, seconds_per_batch: float = 1.0):
        super().__init__()
        self.net = tiny(num_classes, in_channels, image_size)
        self.seconds_per_batch = seconds_per_batch

    def forward(self, x):
        if not self.training:
            import time

            time.sleep(self.seconds_per_batch)
        return self.net(x)
