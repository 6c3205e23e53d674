"""Per-sample transforms and display helpers: what an image becomes before the model sees it.

    python -m runner dataset=flowers102 dataset.augment=basic

`pil_transforms(cfg, train)` turns a decoded image into a standardized tensor (training adds
crop and flip with `augment=basic`); `denormalize` undoes the standardization for display.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torch.utils.data import Dataset

from runner.errors import UserError


def image_hw(image_size) -> tuple[int, int]:
    """`image_size` may be one int (square) or [height, width]."""
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def channel_stats(cfg) -> tuple[list[float], list[float]]:
    """Mean and std per channel; a single value is broadcast to every channel."""
    mean, std = list(cfg.mean), list(cfg.std)
    if len(mean) == 1:
        mean = mean * cfg.channels
    if len(std) == 1:
        std = std * cfg.channels
    return mean, std


def load_image(path) -> Image.Image:
    """torchvision's PIL loader, with a clear message naming a file that does not decode."""
    try:
        with open(path, "rb") as file:
            image = Image.open(file)
            return image.convert("RGB")
    except (OSError, Image.DecompressionBombError) as error:  # a bomb: too many pixels to decode safely
        raise UserError(f"{path} cannot be decoded as an image ({error}). Fix: replace or remove it "
                        "(python -m runner.check checks=[outliers] lists every such file), "
                        "or set dataset.bad_images=skip to leave such files out") from None


def pil_transforms(cfg, train: bool) -> Callable:
    """PIL image -> standardized tensor; with augment=basic, training adds crop and flip."""
    # torchvision takes a second to import: only for the datasets that use it (not the default digits)
    from torchvision import transforms

    size = image_hw(cfg.image_size)
    mean, std = channel_stats(cfg)
    steps: list = [transforms.Grayscale(1)] if cfg.channels == 1 else []
    if train and cfg.augment == "basic":
        steps += [transforms.RandomResizedCrop(size, antialias=True), transforms.RandomHorizontalFlip()]
    else:
        steps += [transforms.Resize(size, antialias=True)]
    steps += [transforms.ToTensor(), transforms.Normalize(mean, std)]
    return transforms.Compose(steps)


def denormalize(x: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """A standardized image (or batch) back to pixel values in [0, 1], for display."""
    return (x.float() * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)).clamp(0, 1)


def tensor_augmentation(cfg) -> Callable | None:
    """For datasets held as standardized tensors: the training augmentation, or None."""
    if cfg.augment != "basic":
        return None
    from torchvision import transforms
    size = image_hw(cfg.image_size)
    return transforms.Compose(
        [transforms.RandomResizedCrop(size, antialias=True), transforms.RandomHorizontalFlip()]
    )


class TransformedTensors(Dataset):
    """A TensorDataset whose images pass through `transform` (training augmentation)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(self.images[index]), self.labels[index]
