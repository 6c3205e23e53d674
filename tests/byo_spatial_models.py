"""Small CNNs for the spatial_dependencies check, as `model._target_=tests.byo_spatial_models.scrambled_cnn` names them.

Not part of runner: they stand for a user's own models. The scrambled ones plant the practice's
bug of a `view` where a `permute` was meant (the images come in as (B, C, H, W) already; the
model "converts" them with a view, which reinterprets the memory and mixes rows, columns and
channels); `plain_cnn` is the same network without the bug; `pooled_cnn` pools, strides and
dilates around its first conv, which is healthy.
"""

from __future__ import annotations

from torch import nn


def sides(image_size) -> tuple[int, int]:
    return (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)


class SmallCNN(nn.Module):
    """conv16 - ReLU - conv32 - ReLU - linear over the feature map; `scramble` plants a view-for-permute bug:
    "channels" (channels-last to channels-first by view), "sides" (height and width swapped by view),
    "fixed" ("channels" with the configured height and width written in: it takes only that size);
    "batch" (not a scramble within a sample: each image gets the batch's mean image added, mixing samples)."""

    def __init__(self, num_classes: int, in_channels: int, image_size, scramble: str | None = None):
        super().__init__()
        self.scramble, self.size = scramble, sides(image_size)
        self.features = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(16, 32, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(32 * self.size[0] * self.size[1], num_classes)

    def forward(self, x):
        batch, channels, height, width = x.shape
        if self.scramble == "channels":
            x = x.view(batch, height, width, channels).permute(0, 3, 1, 2)
        elif self.scramble == "sides":
            x = x.view(batch, channels, width, height)
        elif self.scramble == "fixed":
            x = x.view(batch, *self.size, channels).permute(0, 3, 1, 2)
        elif self.scramble == "batch":
            x = x + x.mean(dim=0, keepdim=True)
        return self.head(self.features(x).flatten(1))


def scrambled_cnn(num_classes: int, in_channels: int, image_size) -> nn.Module:
    return SmallCNN(num_classes, in_channels, image_size, scramble="channels")


def sides_swapped_cnn(num_classes: int, in_channels: int, image_size) -> nn.Module:
    return SmallCNN(num_classes, in_channels, image_size, scramble="sides")


def fixed_size_scrambled_cnn(num_classes: int, in_channels: int, image_size) -> nn.Module:
    return SmallCNN(num_classes, in_channels, image_size, scramble="fixed")


def batch_mixing_cnn(num_classes: int, in_channels: int, image_size) -> nn.Module:
    return SmallCNN(num_classes, in_channels, image_size, scramble="batch")


def plain_cnn(num_classes: int, in_channels: int, image_size) -> nn.Module:
    return SmallCNN(num_classes, in_channels, image_size)


def pooled_cnn(num_classes: int, in_channels: int, image_size) -> nn.Module:
    """An average pool and a ReLU before a strided, dilated first conv, max pools after: healthy."""
    return nn.Sequential(nn.AvgPool2d(2, stride=1), nn.ReLU(),
                         nn.Conv2d(in_channels, 8, 3, stride=2, dilation=2, padding=2), nn.ReLU(),
                         nn.MaxPool2d(2, ceil_mode=True), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))
