"""Decoded images kept between runs: `python -m runner +experiment=flowers dataset.cache=disk`.

Decoding and resizing a JPEG costs more than the rest of a sample's preparation, every epoch
again. With `dataset.cache=disk` each image of a file-backed split (Flowers-102, ImageFolder)
is decoded and resized once, to a size a little larger than `dataset.image_size` (so random
crops still vary), into one uint8 array on disk that later runs map into memory; `memory`
reads that array into RAM; `device` copies each split's array to the GPU once, where batches are
gathered and finished without a loader worker (the way the fastest CIFAR-10 trainers feed a GPU).
Either way the loader hands over uint8 pixels and `batch_augment.Finish` crops, flips and
standardizes the micro-batch on the device. The file's name is a hash of everything the pixels depend on: each
image file's path, size and modification time, the stored size and the channels. A changed
file, size or setting is a new key, so a stale cache is never read; the array is written
under a temporary name and renamed (io.write_atomic), so a killed build leaves no half-written
cache, and one process builds while others starting with it wait.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from runner.data.image_files import image_files
from runner.data.introspect import labels_of
from runner.data.batch_augment import Finish
from runner.data.transforms import channel_stats, image_hw
from runner.io import exclusive, write_atomic

log = logging.getLogger(__name__)

MARGIN = 1.15  # stored images are this much larger than the crop: random crops still differ


def cache_folder() -> Path:
    """$RUNNER_CACHE, else $XDG_CACHE_HOME/runner, else ~/.cache/runner."""
    if os.environ.get("RUNNER_CACHE"):
        return Path(os.environ["RUNNER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "runner"


def stored_size(cfg) -> tuple[int, int]:
    height, width = image_hw(cfg.image_size)
    return round(height * MARGIN), round(width * MARGIN)


def cache_key(files: list[Path], size: tuple[int, int], channels: int) -> str:
    """A hash of everything the cached pixels depend on."""
    described = [(str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns) for path in files]
    return hashlib.sha256(json.dumps([described, size, channels, 1]).encode()).hexdigest()[:24]


def decoded(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """One image, decoded (JPEG at reduced scale where that is enough) and resized to size."""
    with Image.open(path) as image:
        image.draft("RGB", (size[1], size[0]))  # decode at the smallest JPEG scale that still covers size
        image = image.convert("L" if channels == 1 else "RGB").resize((size[1], size[0]), Image.BILINEAR)
        pixels = np.asarray(image, dtype=np.uint8)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def build_array(files: list[Path], size: tuple[int, int], channels: int, path: Path) -> None:
    """Decode every file into a .npy uint8 array (N, height, width, channels), in parallel, atomically."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
              "shape": (len(files), *size, channels)}

    def write(file) -> None:
        np.lib.format.write_array_header_1_0(file, header)
        with ThreadPoolExecutor() as pool:  # PIL decodes and resizes outside the GIL; rows stream to the file
            images = pool.map(lambda f: decoded(f, size, channels), files)
            for pixels in tqdm(images, total=len(files), desc=f"caching {len(files)} images", disable=None,
                               leave=False):
                file.write(np.ascontiguousarray(pixels).tobytes())
    with exclusive(path.with_name(path.name + ".lock")):  # several processes: one builds, the others wait
        if not path.exists():
            write_atomic(path, write)


class CachedImages(Dataset):
    """A split read from the cache: uint8 pixels at the stored size, finished (crop, flip, standardization)
    a whole micro-batch at a time on the device by `batch_augment.Finish` (loaders.train_loader)."""

    def __init__(self, array: np.ndarray, indices: list[int], labels: list[int], files: list[Path], cfg,
                 train: bool):
        self.array, self.indices, self.targets = array, indices, labels
        self._image_files = files  # where the pixels came from (introspect.image_files, like torchvision's)
        mean, std = channel_stats(cfg)
        self.finish = Finish(image_hw(cfg.image_size), tuple(mean), tuple(std), train and cfg.augment == "basic")
        self.on_device = cfg.cache == "device"
        self._device_copy: tuple[torch.device, torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def pixels(self, index: int) -> torch.Tensor:
        """One image's stored uint8 pixels (height, width, channels)."""
        return torch.from_numpy(np.array(self.array[self.indices[index]]))

    def __getitem__(self, index: int):
        """One finished sample, for the checks and reports: its crop drawn from torch's generator
        (which loaders.SeededSamples seeds per sample)."""
        seed = torch.randint(2**62, ()) if self.finish.augment else torch.zeros((), dtype=torch.int64)
        return self.finish(self.pixels(index)[None], seed[None])[0], self.targets[index]

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """This split's pixels and labels on the device (dataset.cache=device), copied there once."""
        if self._device_copy is None or self._device_copy[0] != device:
            pixels = torch.from_numpy(np.ascontiguousarray(self.array[np.asarray(self.indices)])).to(device)
            self._device_copy = device, pixels, torch.as_tensor(self.targets, device=device)
        return self._device_copy[1:]


def cached_splits(cfg, splits: dict[str, Dataset]) -> dict[str, Dataset]:
    """The file-backed splits read from the decoded-image cache (built first when missing)."""
    files_of = {split: image_files(dataset) for split, dataset in splits.items()}
    every_file = sorted({f for files in files_of.values() if files for f in files})
    if not every_file:
        log.info("dataset.cache=%s: this dataset is not read from image files, nothing to cache", cfg.cache)
        return splits
    size = stored_size(cfg)
    path = cache_folder() / f"{cfg.name}-{size[0]}x{size[1]}-{cache_key(every_file, size, cfg.channels)}.npy"
    if not path.exists():
        log.info("dataset.cache=%s: decoding %d images once into %s", cfg.cache, len(every_file), path)
    build_array(every_file, size, cfg.channels, path)  # returns at once when the cache exists
    array = np.load(path, mmap_mode="r")
    if cfg.cache == "memory":  # (device: each split is copied from the mapped file by CachedImages.on)
        array = np.array(array)
    position = {f: i for i, f in enumerate(every_file)}
    return {split: CachedImages(array, [position[f] for f in files_of[split]], labels_of(dataset).tolist(),
                                files_of[split], cfg, train=split == "train") if files_of[split] is not None else dataset
            for split, dataset in splits.items()}
