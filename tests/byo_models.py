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
