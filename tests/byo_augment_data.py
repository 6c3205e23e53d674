"""Digits brought as a user's own data with a training transform of the user's own, as
`dataset=custom dataset._target_=tests.byo_augment_data.flipped_digits` names them.

Not part of runner: it stands for a user's package whose training split augments its images
itself (random ops under torch's generator, which runner's loader seeds per sample).
`flipped_digits` mirrors half the training images (a mirrored digit is another digit: the
plant of augmentation_consistency); `noisy_digits` adds a little noise (it keeps the class).
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class Digits(Dataset):
    """scikit-learn's 8x8 digits as standardized (1, 8, 8) tensors; `transform` applied to each image read."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.images[index]
        return (image if self.transform is None else self.transform(image)), int(self.labels[index])


def random_mirror(image: torch.Tensor) -> torch.Tensor:
    return image.flip(-1) if torch.rand(()) < 0.5 else image


def light_noise(image: torch.Tensor) -> torch.Tensor:
    return image + 0.05 * torch.randn(image.shape)


def digits_with(transform) -> dict[str, Dataset]:
    """Train (every other image of the first 1500, transformed), val (the others), test (the rest)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16 - 0.5) / 0.5
    labels = torch.tensor(bunch.target)
    return {"train": Digits(images[0:1500:2], labels[0:1500:2], transform),
            "val": Digits(images[1:1500:2], labels[1:1500:2]), "test": Digits(images[1500:], labels[1500:])}


def flipped_digits() -> dict[str, Dataset]:
    return digits_with(random_mirror)


def noisy_digits() -> dict[str, Dataset]:
    return digits_with(light_noise)
