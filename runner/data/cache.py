"""Decoded images kept between runs: `python -m runner +experiment=flowers dataset.cache=disk`.

Decoding and resizing a JPEG costs more than the rest of a sample's preparation, every epoch
again. With `dataset.cache=disk` each image of a file-backed split (Flowers-102, ImageFolder)
is decoded and resized once, to a size a little larger than `dataset.image_size` (so random
crops still vary), into one uint8 array on disk that later runs map into memory; `memory`
reads that array into RAM; `device` copies each split's array to the GPU once, where batches are
gathered and finished without a loader worker (the way the fastest CIFAR-10 trainers feed a GPU).
Either way the loader hands over uint8 pixels and `batch_augment.Finish` crops, flips and
standardizes the micro-batch on the device. The file's name is a hash of everything the pixels
depend on: each image file's path, size and modification time, the stored size, the channels and the
way files are read (transforms.READ_VERSION: EXIF orientation applied and 16-bit pixels scaled since 2). A changed file, size,
setting or reading is a new key, so a stale cache is never read; the array is written
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
from tqdm import tqdm

from runner.common.errors import UserError
from runner.common.io import exclusive, write_atomic
from runner.data.transforms import READ_VERSION, decoded

log = logging.getLogger(__name__)


def cache_folder() -> Path:
    """$RUNNER_CACHE, else $XDG_CACHE_HOME/runner, else ~/.cache/runner."""
    if os.environ.get("RUNNER_CACHE"):
        return Path(os.environ["RUNNER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "runner"


def cache_key(files: list[Path], size: tuple[int, int], channels: int) -> str:
    """A hash of everything the cached pixels depend on."""
    described = [(str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns) for path in files]
    return hashlib.sha256(json.dumps([described, size, channels, READ_VERSION]).encode()).hexdigest()[:24]


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


def cached_array(cfg, files: list[Path], size: tuple[int, int]) -> np.ndarray:
    """Every file's pixels at size, from the cache (built first when missing): mapped, or in RAM with `memory`.

    A damaged cache file (cut short, overwritten) is rebuilt with a warning: it holds nothing that the
    image files do not."""
    path = cache_folder() / f"{cfg.name}-{size[0]}x{size[1]}-{cache_key(files, size, cfg.channels)}.npy"
    shape = (len(files), *size, cfg.channels)
    try:
        if not path.exists():
            log.info("dataset.cache=%s: decoding %d images once into %s", cfg.cache, len(files), path)
        build_array(files, size, cfg.channels, path)  # returns at once when the cache exists
        array = mapped(path, shape)
        if array is None:
            with exclusive(path.with_name(path.name + ".lock")):
                if mapped(path, shape) is None:  # no other process has rebuilt it meanwhile
                    path.unlink()
            build_array(files, size, cfg.channels, path)
            array = np.load(path, mmap_mode="r")
    except OSError as error:
        raise UserError(f"cannot write the decoded-image cache {path} ({error}). Fix: RUNNER_CACHE=a writable "
                        "folder, or dataset.cache=none") from None
    return np.array(array) if cfg.cache == "memory" else array  # (device: pixels.ImagePixels.on copies a split)


def mapped(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cache file mapped into memory, or None (with a warning) when it is damaged."""
    try:
        array = np.load(path, mmap_mode="r")
        if array.shape == shape and array.dtype == np.uint8:
            return array
        problem = f"it holds {array.dtype} {array.shape}, not uint8 {shape}"
    except (ValueError, OSError, EOFError) as error:
        problem = str(error)
    log.warning("the decoded-image cache %s is damaged (%s): rebuilding it", path, problem)
    return None
