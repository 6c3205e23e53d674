"""Images as uint8 pixels, finished on the device: `python -m runner +experiment=flowers dataset.cache=none`.

The file-backed splits (Flowers-102, ImageFolder) reach the model this way, with or without
the decoded-image cache: each image is decoded (a JPEG at the smallest scale that covers it,
PIL's draft mode) and resized to the stored size, a little larger than `dataset.image_size`
so random crops still vary (`stored_size`). That uint8 image is what a loader worker hands
over: from the file with `dataset.cache=none`, from the cache's array otherwise
(runner/data/cache.py). The float work (crop, flip, dtype, standardization) is done per
micro-batch on the device by `batch_augment.Finish`. The cache is therefore only a matter of
speed: every setting of it trains on the same pixels. Datasets that hold their images as one
uint8 array (torchvision's CIFAR-10: `.data`, N x 32 x 32 x 3) are read from it the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from runner.common.errors import UserError
from runner.data.auto_augment import sample_ops
from runner.data.batch_augment import Finish
from runner.data.cache import cached_array
from runner.data.image_files import image_files
from runner.data.introspect import labels_of
from runner.data.transforms import channel_stats, decoded, image_hw

MARGIN = 1.15  # stored images are this much larger than the crop: random crops still differ


def stored_size(cfg) -> tuple[int, int]:
    height, width = image_hw(cfg.image_size)
    return round(height * MARGIN), round(width * MARGIN)


class ImagePixels(Dataset):
    """A split of image files (decoded to the stored size, or read from the cache's array) or of a dataset's
    uint8 array, as uint8 pixels; finished (crop, flip, standardization) a micro-batch at a time by `Finish`."""

    def __init__(self, files: list[Path] | None, labels: list[int], classes: list[str] | None, cfg, train: bool,
                 array: np.ndarray | None = None, rows: list[int] | None = None):
        # introspect finds the labels, class names and files where torchvision's datasets keep them
        self.targets, self.classes, self.files = labels, classes, files
        if files is not None:
            self._image_files = files
        self.array, self.rows = array, rows
        self.size, self.channels = stored_size(cfg), cfg.channels
        mean, std = channel_stats(cfg)
        self.finish = Finish(image_hw(cfg.image_size), tuple(mean), tuple(std), train and cfg.augment == "basic",
                             sample_ops(cfg, train))
        self.on_device = cfg.get("cache", "none") == "device"
        self._device_copy: tuple[torch.device, torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.targets)

    def pixels(self, index: int) -> torch.Tensor:
        """One image's uint8 pixels (height, width, channels) at the stored size."""
        if self.array is None:
            return torch.from_numpy(decoded(self.files[index], self.size, self.channels))
        return torch.from_numpy(np.array(self.array[self.rows[index]]))

    def __getitem__(self, index: int):
        """One finished sample, for the checks and reports: its crop drawn from torch's generator
        (which loaders.SeededSamples seeds per sample)."""
        seed = torch.randint(2**62, ()) if self.finish.random else torch.zeros((), dtype=torch.int64)
        return self.finish(self.pixels(index)[None], seed[None])[0], self.targets[index]

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """This split's pixels and labels on the device (dataset.cache=device), copied there once."""
        if self._device_copy is None or self._device_copy[0] != device:
            refuse_what_does_not_fit(len(self) * int(np.prod(self.array.shape[1:])), device)
            pixels = torch.from_numpy(np.ascontiguousarray(self.array[np.asarray(self.rows)])).to(device)
            self._device_copy = device, pixels, torch.as_tensor(self.targets, device=device)
        return self._device_copy[1:]


def free_memory(device: torch.device) -> int | None:
    """Bytes free on a GPU; None for the CPU (the pixels are read from the mapped cache file)."""
    return torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None


def refuse_what_does_not_fit(size: int, device: torch.device) -> None:
    """The split's pixels may take half the device's free memory: the model and its activations need the rest."""
    free = free_memory(device)
    if free is not None and size > free / 2:
        raise UserError(f"dataset.cache=device: this split's pixels take {size / 2**30:.2f} GiB, more than half of "
                        f"the {free / 2**30:.2f} GiB free on {device}. Fix: dataset.cache=memory (or disk), or a "
                        "smaller dataset.image_size")


def pixel_splits(cfg, splits: dict[str, Dataset]) -> dict[str, Dataset]:
    """The splits of image files or of a uint8 array as ImagePixels (image files read from the decoded-image
    cache with dataset.cache set); other datasets as they are."""
    files_of = {split: image_files(dataset) for split, dataset in splits.items()}
    every_file = sorted({f for files in files_of.values() if files for f in files})
    array, row_of = None, {}
    if every_file and cfg.get("cache", "none") != "none":
        array = cached_array(cfg, every_file, stored_size(cfg))
        row_of = {f: i for i, f in enumerate(every_file)}
    result = {}
    for split, dataset in splits.items():
        files = files_of[split]
        if files is None:
            held = uint8_array(dataset)
        else:  # the cache's rows, or (None, None): decoded from the files
            held = (array, [row_of[f] for f in files]) if array is not None else (None, None)
        result[split] = dataset if held is None else ImagePixels(
            files, labels_of(dataset).tolist(), class_names(dataset), cfg, split == "train", *held)
    return result


def uint8_array(dataset: Dataset) -> tuple[np.ndarray, list[int]] | None:
    """(the array, this split's rows of it) for a dataset holding its images as uint8 (N, H, W, C), else None."""
    rows = list(range(len(dataset)))
    while isinstance(dataset, Subset):
        rows = [dataset.indices[row] for row in rows]
        dataset = dataset.dataset
    array = getattr(dataset, "data", None)
    if isinstance(array, np.ndarray) and array.dtype == np.uint8 and array.ndim == 4 and array.shape[-1] in (1, 3):
        return array, rows
    return None


def class_names(dataset: Dataset) -> list[str] | None:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return getattr(dataset, "classes", None)
