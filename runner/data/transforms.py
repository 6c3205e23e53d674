"""Per-sample transforms and display helpers: what an image becomes before the model sees it.

    python -m runner dataset=cifar10 dataset.augment=basic

`load_image` and `decoded` read an image file (the file-backed datasets' uint8 pixels,
runner/data/pixels.py) as a viewer shows it: turned upright by its EXIF orientation (a phone's
photo stored sideways), 16-bit pixels scaled to 8 bits; `pil_transforms(cfg, train)` turns a PIL image of CIFAR-10 or a custom
dataset into a standardized tensor (training adds crop and flip with `augment=basic`);
`denormalize` undoes the standardization for display.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from runner.common.errors import UserError
from runner.data.auto_augment import SampleOps, sample_ops


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


READ_VERSION = 2
"""How a file becomes pixels; part of the decoded-image cache's key (runner/data/cache.py), so a cache
written by an older way of reading is never taken for one of this (2: EXIF orientation applied, 16-bit
pixels scaled to 8 bits instead of clipped)."""

ORIENTATION = 0x0112  # the EXIF tag: 1 upright, 3 upside down, 6 and 8 sideways, 2/4/5/7 mirrored
SIDEWAYS = (5, 6, 7, 8)  # orientations whose upright width is the stored height


def orientation(image: Image.Image, load: bool = True) -> int:
    """The image's EXIF orientation (1..8; 1 when it has none or an unreadable one).

    load=False: without decoding the pixels (a PNG keeps its EXIF after them only when it is loaded;
    such a PNG, rare, then counts as upright)."""
    if not load and image.format == "PNG" and "exif" not in image.info:
        return 1
    try:
        value = image.getexif().get(ORIENTATION, 1)
    except Exception:  # noqa: BLE001 (a damaged EXIF block says nothing about the pixels: treat as upright)
        return 1
    return value if value in range(1, 9) else 1


def upright(image: Image.Image, turn: int | None = None) -> Image.Image:
    """The image as a viewer shows it: ImageOps.exif_transpose where its EXIF orientation is not 1."""
    turn = orientation(image) if turn is None else turn
    return ImageOps.exif_transpose(image) if turn != 1 else image


SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # "I" (32-bit integer): read as 16-bit, as Pillow once opened PNGs
FILE_FIX = "save it as an 8-bit or 16-bit image, or remove it"


def eight_bit(image: Image.Image, where: str, fix: str = FILE_FIX) -> Image.Image:
    """16-bit pixels scaled to 8 bits (0..65535 -> 0..255; PIL's own conversion clips them at 255, white);
    32-bit float pixels, whose range nothing says, refused in one line naming `where`; others as they are."""
    if image.mode in SIXTEEN_BIT:
        pixels = np.clip(np.asarray(image), 0, 65535).astype(np.uint32)
        return Image.fromarray(((pixels * 255 + 32767) // 65535).astype(np.uint8))
    if image.mode == "F":
        raise UserError(f"{where} has 32-bit float pixels (PIL mode F), of no known range. Fix: {fix}")
    return image


def as_rgb(image: Image.Image, where: str, fix: str = FILE_FIX) -> Image.Image:
    """A PIL image (a file's, or a custom dataset's) as the 8-bit RGB pixels a viewer shows."""
    return eight_bit(upright(image), where, fix).convert("RGB")


def load_image(path, draft: tuple[int, int] | None = None) -> Image.Image:
    """torchvision's PIL loader, turned upright by the EXIF orientation, with a clear message naming a file
    that does not decode.

    `draft` (width, height, upright): a JPEG is decoded at the smallest of its 1/1, 1/2, 1/4, 1/8 scales that
    still covers it (PIL's draft mode: the decoder skips the detail, 4x-16x fewer pixels for a photo
    far larger than the training size)."""
    try:
        with open(path, "rb") as file:
            image = Image.open(file)
            turn = orientation(image)  # a JPEG's EXIF is in its header: read without decoding
            if draft is not None and image.format == "JPEG":
                image.draft("RGB", draft[::-1] if turn in SIDEWAYS else draft)  # the stored image's sides
            return eight_bit(upright(image, turn), str(path)).convert("RGB")
    except (OSError, Image.DecompressionBombError) as error:  # a bomb: too many pixels to decode safely
        raise UserError(f"{path} cannot be decoded as an image ({error}). Fix: replace or remove it "
                        "(python -m runner.check checks=[outliers] lists every such file), "
                        "or set dataset.bad_images=skip to leave such files out") from None


def decoded(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """One image file -> uint8 (height, width, channels) at size: decoded at the smallest JPEG scale
    that still covers size (load_image's draft), then resized bilinearly."""
    image = load_image(path, draft=(size[1], size[0]))
    if channels == 1:
        image = image.convert("L")
    pixels = np.array(image.resize((size[1], size[0]), Image.BILINEAR), dtype=np.uint8)  # writable: torch shares it
    return pixels[..., None] if pixels.ndim == 2 else pixels


class Standardize:
    """PIL image -> standardized float tensor in one pass: (pixels / 255 - mean) / std, as torchvision's
    ToTensor then Normalize compute it, without their intermediate float image (CIFAR-10, custom datasets)."""

    def __init__(self, mean: list[float], std: list[float]):
        self.scale = 1 / (255 * torch.tensor(std).view(-1, 1, 1))
        self.shift = torch.tensor(mean).view(-1, 1, 1) / torch.tensor(std).view(-1, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))
        pixels = pixels.view(*pixels.shape[:2], -1).permute(2, 0, 1)
        return pixels.float().mul_(self.scale).sub_(self.shift)


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
    steps.append(Standardize(mean, std))
    ops = sample_ops(cfg, train)
    if ops is not None:
        steps.append(SeededOps(ops, mean, std))
    return transforms.Compose(steps)


def denormalize(x: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """A standardized image (or batch) back to pixel values in [0, 1], for display."""
    return (x.float() * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)).clamp(0, 1)


def tensor_augmentation(cfg) -> Callable | None:
    """For datasets held as standardized tensors: the training augmentation (crop and flip with augment=basic,
    then dataset.auto_augment / random_erasing), or None."""
    ops = sample_ops(cfg, train=True)
    if cfg.augment != "basic" and ops is None:
        return None
    from torchvision import transforms
    size = image_hw(cfg.image_size)
    steps = [transforms.RandomResizedCrop(size, antialias=True), transforms.RandomHorizontalFlip()] \
        if cfg.augment == "basic" else []
    if ops is not None:
        steps.append(SeededOps(ops, *channel_stats(cfg)))
    return transforms.Compose(steps)


class SeededOps:
    """A standardized float image through dataset.auto_augment / random_erasing (auto_augment.SampleOps), the
    way batch_augment.Finish runs them: back to uint8 pixels (values outside the mean +- std * [0, 1] range
    clip, as a file's pixels would), the ops, standardized again, erased. The sample's seed is drawn after
    the crop from torch's generator, which loaders.SeededSamples seeds per sample."""

    def __init__(self, ops: SampleOps, mean: list[float], std: list[float]):
        self.ops = ops
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        seed = np.array([int(torch.randint(2**62, ()))])
        if self.ops.auto_augment != "none":
            pixels = (image * self.std + self.mean).mul_(255).round_().clamp_(0, 255).to(torch.uint8)
            pixels = self.ops.pixels(pixels[None], seed)[0]
            image = (pixels.float() / 255 - self.mean) / self.std
        return self.ops.erase(image[None].clone(), seed)[0]


class TransformedTensors(Dataset):
    """A TensorDataset whose images pass through `transform` (training augmentation)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(self.images[index]), self.labels[index]
