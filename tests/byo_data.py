"""Data brought by the user: `python -m runner dataset=custom dataset._target_=tests.byo_data.stripes`.

Not part of runner: it stands for a user's own package (`my_project.data`), to show the contract
of `dataset=custom`. The callable gets the keyword arguments its signature names from the
dataset config, and returns {"train": ..., "val": ..., "test": ... (optional)}: torch Datasets of
(image, label), the image a PIL image (runner resizes, standardizes and augments it) or a
(channels, height, width) float tensor (used as it is).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset


class Stripes(Dataset):
    """Images with stripes of a class-specific orientation and colour, as PIL images."""

    def __init__(self, size: int, num_classes: int, seed: int, side: int = 24):
        rng = np.random.default_rng(seed)
        self.labels = [int(c) for c in rng.integers(0, num_classes, size)]
        phases = rng.uniform(0, 2 * np.pi, size)
        y, x = np.mgrid[:side, :side]
        self.images = []
        for label, phase in zip(self.labels, phases, strict=True):
            angle = np.pi * label / num_classes
            wave = np.sin(0.8 * (x * np.cos(angle) + y * np.sin(angle)) + phase)
            colour = np.array([255 * (label % 3 == k) for k in range(3)]) * 0.6 + 60
            pixels = np.clip(colour * (0.5 + 0.5 * wave[..., None]) + rng.normal(0, 10, (side, side, 3)), 0, 255)
            self.images.append(Image.fromarray(pixels.astype(np.uint8)))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index], self.labels[index]


def stripes(num_classes: int, train_size: int = 96, val_size: int = 48, seed: int = 0) -> dict[str, Dataset]:
    """Train and validation splits of Stripes (no test split)."""
    return {"train": Stripes(train_size, num_classes, seed), "val": Stripes(val_size, num_classes, seed + 1)}


def tensors(num_classes: int, size: int = 40) -> dict[str, Dataset]:
    """Ready-made standardized tensors (channels, 8, 8), all three splits."""
    generator = torch.Generator().manual_seed(0)
    prototypes = torch.randn(num_classes, 3, 8, 8, generator=generator)

    def split():
        labels = torch.arange(size) % num_classes
        return torch.utils.data.TensorDataset(prototypes[labels] + 0.5 * torch.randn(size, 3, 8, 8, generator=generator),
                                              labels)
    return {"train": split(), "val": split(), "test": split()}


def not_splits(num_classes: int) -> list:
    """A mistake a user makes: a list of datasets instead of a mapping of split names."""
    return [Stripes(8, num_classes, 0), Stripes(8, num_classes, 1)]


def no_val(num_classes: int) -> dict:
    """Another: the validation split is missing."""
    return {"train": Stripes(8, num_classes, 0)}


def wrong_items(num_classes: int) -> dict:
    """Another: items that are not (image, label) pairs."""
    return {"train": [np.zeros((8, 8)) for _ in range(4)], "val": [np.zeros((8, 8)) for _ in range(4)]}
