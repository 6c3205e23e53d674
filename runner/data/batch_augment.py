"""A micro-batch of uint8 images finished on the device: `python -m runner +experiment=flowers dataset.cache=device`.

For the file-backed datasets (runner/data/pixels.py, any `dataset.cache`) the loader hands
over uint8 pixels at the stored size; `Finish` turns the whole batch into the model's input where the model runs
(random-resized-crop and flip for training, a resize otherwise; then the dtype and the
standardization), so the float work is done once per batch on the GPU, not per sample on the
CPU workers. Each sample's crop and flip come from its own seed through a counter-based hash
(`uniforms`), so a sample is augmented the same whichever batch, worker or device it lands in,
and after a resume. The crop follows torchvision's RandomResizedCrop draw (scale 0.08-1,
aspect 3/4-4/3, ten tries, then the central crop) and resamples bilinearly as
`resized_crop(antialias=False)` does: the stored images are at most 1.15x the crop, so there
is no strong downscaling to antialias.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

SCALE, RATIO, TRIES = (0.08, 1.0), (3 / 4, 4 / 3), 10


def uniforms(seeds: np.ndarray, count: int, start: int = 0) -> np.ndarray:
    """(N,) integer seeds -> (N, count) floats in [0, 1): splitmix64 of (seed, k) for k = start + 1 .. start + count,
    the same on any machine. The crop takes k = 1..23; other draws (auto_augment.py's) start further on, so
    turning them on or off leaves the crop's draws as they are."""
    state = seeds.astype(np.int64).astype(np.uint64)[:, None] + np.uint64(0x9E3779B97F4A7C15) * np.arange(
        start + 1, start + count + 1, dtype=np.uint64)  # unsigned arithmetic wraps modulo 2**64, as splitmix64 wants
    state = (state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    state = (state ^ (state >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    state ^= state >> np.uint64(31)
    return (state >> np.uint64(11)).astype(np.float64) * 2.0**-53


def crop_boxes(seeds: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's random-resized-crop box (top, left, height, width) in pixels, and whether it is mirrored."""
    u = uniforms(seeds, 2 * TRIES + 3)  # the tries' areas and aspects, the place, the flip
    area = height * width * (SCALE[0] + (SCALE[1] - SCALE[0]) * u[:, :TRIES])
    log_ratio = math.log(RATIO[0]) + (math.log(RATIO[1]) - math.log(RATIO[0])) * u[:, TRIES:2 * TRIES]
    crop_w = np.rint(np.sqrt(area * np.exp(log_ratio))).astype(np.int64)
    crop_h = np.rint(np.sqrt(area / np.exp(log_ratio))).astype(np.int64)
    fits = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
    first = fits.argmax(axis=1)  # the first try that fits, as torchvision takes it
    rows = np.arange(len(seeds))
    central_h, central_w = central_crop(height, width)
    h = np.where(fits.any(axis=1), crop_h[rows, first], central_h)
    w = np.where(fits.any(axis=1), crop_w[rows, first], central_w)
    top = np.where(fits.any(axis=1), np.floor(u[:, 2 * TRIES] * (height - h + 1)), (height - h) // 2)
    left = np.where(fits.any(axis=1), np.floor(u[:, 2 * TRIES + 1] * (width - w + 1)), (width - w) // 2)
    return np.stack([top, left, h, w], axis=1).astype(np.int64), u[:, -1] < 0.5


def central_crop(height: int, width: int) -> tuple[int, int]:
    """torchvision's fallback: the whole image, trimmed to the nearest allowed aspect ratio."""
    if width / height < RATIO[0]:
        return round(width / RATIO[0]), width
    if width / height > RATIO[1]:
        return height, round(height * RATIO[1])
    return height, width


def resized_crops(images: torch.Tensor, boxes: torch.Tensor, mirrored: torch.Tensor,
                  size: tuple[int, int]) -> torch.Tensor:
    """Float (N, C, H, W) images -> each one's box resampled bilinearly to size (mirrored where asked).

    One affine grid per sample, in grid_sample's coordinates (-1..1 over the image, pixel centres
    at half steps): x_in = (w / W) x_out + (2 left + w) / W - 1, and likewise for y; clamped to the
    box's outer pixel centres, so that pixels outside the box never bleed in (as in a crop, then a resize)."""
    height, width = images.shape[-2:]
    top, left, h, w = boxes.to(images.dtype).unbind(1)
    theta = torch.zeros(len(images), 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = torch.where(mirrored, -w / width, w / width)
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    grid = F.affine_grid(theta, [len(images), images.shape[1], *size], align_corners=False)
    for axis, start, extent, full in ((0, left, w, width), (1, top, h, height)):
        first, last = (2 * start + 1) / full - 1, (2 * (start + extent) - 1) / full - 1
        grid[..., axis] = grid[..., axis].clamp(first.view(-1, 1, 1), last.view(-1, 1, 1))
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def pinned_to_device(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor to the device without a host-device sync (pageable memory would force one on CUDA)."""
    if device.type == "cuda":
        return values.pin_memory().to(device, non_blocking=True)
    return values.to(device)


@functools.lru_cache(maxsize=16)
def standardization(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device):
    """(scale, shift) with pixels * scale - shift = (pixels / 255 - mean) / std, on the device once."""
    std_, mean_ = torch.tensor(std).view(-1, 1, 1), torch.tensor(mean).view(-1, 1, 1)
    return (1 / (255 * std_)).to(device), (mean_ / std_).to(device)


@dataclass(frozen=True)
class Finish:
    """uint8 (N, H, W, C) pixels and their seeds -> the standardized float (N, C, h, w) batch the model takes."""

    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool  # dataset.augment=basic: the crop and flip
    # dataset.auto_augment and dataset.random_erasing: an auto_augment.SampleOps (not imported: it imports this
    # module's uniforms), training only
    ops: Any = None

    @property
    def random(self) -> bool:
        """Does a sample's seed change what it becomes?"""
        return self.augment or self.ops is not None

    def __call__(self, pixels: torch.Tensor, seeds: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """`size`: this epoch's (height, width) under trainer.progressive_resize; None: `self.size`. The crop boxes
        do not depend on it (they are drawn on the stored image), so a smaller epoch sees the same crops in fewer pixels."""
        size = tuple(size or self.size)
        images = pixels.permute(0, 3, 1, 2).float()
        if self.augment:
            boxes, mirrored = crop_boxes(seeds.cpu().numpy(), *images.shape[-2:])
            images = resized_crops(images, pinned_to_device(torch.from_numpy(boxes), images.device),
                                   pinned_to_device(torch.from_numpy(mirrored), images.device), size)
        elif tuple(images.shape[-2:]) != size:
            images = F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
        if self.ops is not None and self.ops.auto_augment != "none":  # on uint8 pixels, as torchvision's ops expect
            images = self.ops.pixels(images.round_().clamp_(0, 255).to(torch.uint8), seeds.cpu().numpy()).float()
        # the standard layout, as any other dataset's batch: channels_last only with trainer.channels_last (a
        # channels_last input crashed torch 2.14's CPU backward of the ConvNet with 8 channels)
        images = images.contiguous()
        scale, shift = standardization(self.mean, self.std, images.device)
        images = images.mul_(scale).sub_(shift)
        if self.ops is not None:  # random erasing: on the standardized image, as torchvision's order has it
            images = self.ops.erase(images, seeds.cpu().numpy())
        return images
