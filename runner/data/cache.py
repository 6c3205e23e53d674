"""Decoded images kept between runs: `python -m runner +experiment=flowers dataset.cache=disk`.

Decoding and resizing a JPEG costs more than the rest of a sample's preparation, every epoch
again. With `dataset.cache=disk` each image of a file-backed split (Flowers-102, ImageFolder)
is decoded and resized once, to a size a little larger than `dataset.image_size` (so random
crops still vary), into one uint8 array on disk that later runs map into memory; `memory`
reads that array into RAM. The file's name is a hash of everything the pixels depend on: each
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
from runner.data.transforms import Standardize, channel_stats, image_hw
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
    """A split read from the cache: uint8 pixels -> the same crop, flip and standardization as the files get."""

    def __init__(self, array: np.ndarray, indices: list[int], labels: list[int], files: list[Path], cfg,
                 train: bool):
        self.array, self.indices, self.targets = array, indices, labels
        self._image_files = files  # where the pixels came from (introspect.image_files, like torchvision's)
        from torchvision.transforms import v2

        mean, std = channel_stats(cfg)
        size = list(image_hw(cfg.image_size))
        steps = [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()] \
            if train and cfg.augment == "basic" else [v2.Resize(size, antialias=True)]
        self.transform = v2.Compose([*steps, Standardize(mean, std)])

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        pixels = torch.from_numpy(np.array(self.array[self.indices[index]])).permute(2, 0, 1)
        return self.transform(pixels), self.targets[index]


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
    if cfg.cache == "memory":
        array = np.array(array)
    position = {f: i for i, f in enumerate(every_file)}
    return {split: CachedImages(array, [position[f] for f in files_of[split]], labels_of(dataset).tolist(),
                                files_of[split], cfg, train=split == "train") if files_of[split] is not None else dataset
            for split, dataset in splits.items()}
