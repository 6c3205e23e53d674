"""runner's own models: `python -m runner model=convnet` (linear, mlp, lenet, convnet).

Each maps (batch, channels, height, width) to (batch, num_classes) logits; conf/model/*.yaml name
them as `runner.models.NAME` (runner/models/__init__.py re-exports them), and so do saved checkpoints.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def _pixels(in_channels: int, image_size) -> int:
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    return in_channels * height * width


class CheckpointedSequential(nn.Sequential):
    """nn.Sequential that recomputes each child's activations in backward (same state_dict keys)."""

    def forward(self, x):
        for module in self:
            x = checkpoint(module, x, use_reentrant=False) if self.training else module(x)
        return x


def linear(num_classes: int, in_channels: int, image_size) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(_pixels(in_channels, image_size), num_classes))


def mlp(num_classes: int, in_channels: int, image_size, hidden: int = 256, depth: int = 2,
        dropout: float = 0.0) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = _pixels(in_channels, image_size)
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def lenet(num_classes: int, in_channels: int, image_size) -> nn.Module:
    """LeNet-5 with 'same' padding, so it takes any image of at least 4x4 pixels."""
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * (height // 4) * (width // 4), 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, num_classes),
    )


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample: torchvision.ops.stochastic_depth(x, rate, "row", training), the same random
    numbers drawn; here so that runner's own models never import torchvision (a second at the default run's start)."""
    if not training or rate == 0.0:
        return x
    survival = 1.0 - rate
    noise = torch.empty([x.shape[0]] + [1] * (x.dim() - 1), dtype=x.dtype, device=x.device).bernoulli_(survival)
    return x * noise.div_(survival) if survival > 0 else x * noise


class ResidualBlock(nn.Module):
    """Halves the resolution, changes the channels: two 3x3 convs with GroupNorm(1, c) and a 1x1 strided skip.

    drop_path_rate: stochastic depth in training: each sample's residual branch is dropped whole with this
    probability (the survivors scaled by 1 / (1 - rate)), the skip kept; the identity in eval mode and at 0."""

    def __init__(self, in_channels: int, out_channels: int, drop_path_rate: float = 0.0):
        super().__init__()
        self.drop_path_rate = drop_path_rate
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(1, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(1, out_channels)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False)

    def forward(self, x):
        y = torch.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        y = drop_path(y, self.drop_path_rate, self.training)  # draws nothing at rate 0 or in eval
        return torch.relu(y + self.skip(x))


class ConvNet(nn.Module):
    """drop_rate: spatial dropout (Dropout2d) of the last feature map before the 1x1 classifier: a channel dropped
    whole is, through the global average, exactly dropout of the pooled features that the classifier reads.
    drop_path_rate: stochastic depth, growing linearly with depth to this rate at the last block (block i of n:
    rate * (i + 1) / n, as in Huang et al. 2016). Neither has weights nor draws random numbers at 0: the default
    model is the one built before these settings existed (same state_dict, same initial weights)."""

    def __init__(self, num_classes: int, in_channels: int, channels: int, n_blocks: int,
                 activation_checkpointing: bool, drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, 11, stride=2, padding=5, bias=False),
            nn.GroupNorm(1, channels),
            nn.ReLU(),
        )
        blocks = [ResidualBlock(channels * 2**i, channels * 2 ** (i + 1), drop_path_rate * (i + 1) / n_blocks)
                  for i in range(n_blocks)]
        self.blocks = (CheckpointedSequential if activation_checkpointing else nn.Sequential)(*blocks)
        self.dropout = nn.Dropout2d(drop_rate) if drop_rate > 0 else nn.Identity()
        self.head = nn.Conv2d(channels * 2**n_blocks, num_classes, 1)

    def forward(self, x):
        return self.head(self.dropout(self.blocks(self.stem(x)))).mean(dim=(2, 3))


def convnet(num_classes: int, in_channels: int, channels: int = 32, n_blocks: int = 4,
            activation_checkpointing: bool = False, drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> nn.Module:
    return ConvNet(num_classes, in_channels, channels, n_blocks, activation_checkpointing, drop_rate, drop_path_rate)
