"""Loaders: in which order samples come, in micro-batches, with per-sample seeds.

Randomness is a function of (seed, epoch, sample) only: `EpochSampler` draws each epoch's
order from (seed, epoch) and gives every sample its own augmentation seed, so the data of an
epoch is the same with 0 or 8 workers and after a resume.

A file-backed split (runner/data/pixels.py) is loaded as `UInt8Batch`es that `on_device`
finishes on the device (runner/data/batch_augment.py); with `dataset.cache=device`
no DataLoader is involved: `DeviceBatches` gathers each micro-batch from the split's
pixels already on the GPU (and `on_device` finishes it the same way).
"""

from __future__ import annotations

import functools
import random
import signal
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from runner.data.batch_augment import Finish, pinned_to_device
from runner.data.datasets import stable_seed
from runner.data.pixels import ImagePixels

CPU = torch.device("cpu")


class EpochSampler(Sampler):
    """Yields (index, sample_seed): the order from (seed, epoch), a seed for each sample's augmentation.

    With several processes (torchrun), each learning batch of the epoch's order is dealt out
    to the ranks (rank r takes positions r, r + world_size, ...). The last, smaller learning
    batch is dealt the same way, so some ranks hold one sample more: every sample is used once
    and the update is the same mean as with one process. Only a last batch smaller than the
    number of processes is left out (a rank without a sample could not join the update).
    `start` skips the samples of the epoch already trained on (a resume from mid-epoch).
    """

    def __init__(self, size: int, seed: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.size, self.seed, self.batch_size = size, seed, batch_size
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    @property
    def samples_per_epoch(self) -> int:
        """All processes together."""
        last = self.size % self.batch_size
        return self.size - last if 0 < last < self.world_size else self.size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return len(range(self.rank, self.samples_per_epoch - self.start, self.world_size))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(stable_seed(self.seed, self.epoch))
        order = torch.randperm(self.size, generator=generator)[: self.samples_per_epoch].tolist()
        for first in range(self.start, len(order), self.batch_size):
            for index in order[first : first + self.batch_size][self.rank :: self.world_size]:
                yield index, stable_seed(self.seed, self.epoch, index)


class SeededSamples(Dataset):
    """Runs each sample's transform under its own seed, so augmentation does not depend on workers.

    Only the CPU generator (the one torchvision's transforms draw from) is swapped and restored:
    2 us a sample, where torch.random.fork_rng costs about 80 us.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, sample_seed = key
        generator = torch.default_generator
        outer_state = generator.get_state()
        generator.manual_seed(sample_seed)
        try:
            return self.dataset[index]
        finally:
            generator.set_state(outer_state)


class UInt8Batch(NamedTuple):
    """A collated micro-batch of uint8 images (N, H, W, C), their augmentation seeds, and what finishes them."""

    pixels: torch.Tensor
    seeds: torch.Tensor
    finish: Finish


def on_device(x, device: torch.device, size: tuple[int, int] | None = None) -> torch.Tensor:
    """A loader's batch as the model's input on the device: a UInt8Batch is moved, then finished there.

    `size` (trainer.progressive_resize's size of the epoch; None: dataset.image_size) is where a UInt8Batch is
    cropped to; a float batch (synthetic, digits, a custom dataset's tensors, already cropped on the CPU) is
    resized to it on the device, bilinearly with antialiasing, the same way whichever worker loaded it."""
    if isinstance(x, UInt8Batch):
        return x.finish(x.pixels.to(device, non_blocking=True), x.seeds, size)
    x = x.to(device, non_blocking=True)
    if size is not None and x.dim() == 4 and tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
    return x


class RawSamples(Dataset):
    """(index, seed) -> (uint8 pixels, seed, label) of a file-backed split; collate_pixels batches them."""

    def __init__(self, dataset: ImagePixels):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        return self.dataset.pixels(index), seed, self.dataset.targets[index]


def collate_pixels(samples: list, finish: Finish) -> tuple[UInt8Batch, torch.Tensor]:
    pixels, seeds, labels = zip(*samples, strict=True)
    return UInt8Batch(torch.stack(pixels), torch.tensor(seeds, dtype=torch.int64), finish), torch.tensor(labels)


class DeviceBatches:
    """dataset.cache=device: micro-batches gathered from the split's pixels on the device, finished there."""

    def __init__(self, dataset: ImagePixels, keys: Iterable[tuple[int, int]], batch_size: int,
                 device: torch.device):
        self.dataset, self.keys, self.batch_size, self.device = dataset, keys, batch_size, device

    def __len__(self) -> int:
        return -(-len(self.keys) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[UInt8Batch, torch.Tensor]]:
        """UInt8Batches already on the device: `on_device` finishes them, as it does a loader's."""
        pixels, labels = self.dataset.on(self.device)
        keys = list(self.keys)
        for first in range(0, len(keys), self.batch_size):
            indices, seeds = torch.tensor(keys[first:first + self.batch_size], dtype=torch.int64).unbind(1)
            on_device_indices = pinned_to_device(indices, self.device)
            yield UInt8Batch(pixels[on_device_indices], seeds, self.dataset.finish), labels[on_device_indices]


def _seed_worker(worker_id: int) -> None:
    """numpy and random in a worker, seeded from the torch seed the loader gave it.

    A worker ignores Ctrl-C and SLURM's USR1 warning: a terminal's Ctrl-C (and `scancel --signal=USR1`)
    reaches every process of the job, and the trainer, which stops after its step and checkpoints, still
    needs its workers until then; it shuts them down itself (and they exit if it dies). Not SIGTERM:
    that is how Python ends its worker processes at exit, and an ignored one would hang the exit."""
    for name in ("SIGINT", "SIGUSR1"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def train_loader(dataset: Dataset, micro_batch_size: int, seed: int, num_workers: int, pin_memory: bool,
                 batch_size: int | None = None, rank: int = 0, world_size: int = 1,
                 device: torch.device = CPU):
    """Micro-batches of the training split in a seeded per-epoch order; call sampler.set_epoch(e)."""
    sampler = EpochSampler(len(dataset), seed, batch_size or micro_batch_size, rank, world_size)
    if isinstance(dataset, ImagePixels) and dataset.on_device:
        return DeviceBatches(dataset, sampler, micro_batch_size, device), sampler
    loader = DataLoader(
        RawSamples(dataset) if isinstance(dataset, ImagePixels) else SeededSamples(dataset),
        batch_size=micro_batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        worker_init_fn=_seed_worker,
        # the loader draws its workers' base seed from this generator, not from the global RNG,
        # so creating a loader after a resume does not shift the model's random numbers
        generator=torch.Generator().manual_seed(seed),
        drop_last=False,
        collate_fn=pixels_collation(dataset),
    )
    return loader, sampler


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int, pin_memory: bool,
                device: torch.device = CPU) -> Iterable:
    """Every sample exactly once, in order (no shuffling, no dropped last batch)."""
    if isinstance(dataset, ImagePixels):
        keys = [(index, 0) for index in range(len(dataset))]
        if dataset.on_device:
            return DeviceBatches(dataset, keys, batch_size, device)
        return DataLoader(RawSamples(dataset), batch_size=batch_size, sampler=keys, num_workers=num_workers,
                          pin_memory=pin_memory, collate_fn=pixels_collation(dataset))
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
        pin_memory=pin_memory, worker_init_fn=_seed_worker, drop_last=False,
    )


def pixels_collation(dataset: Dataset):
    """A file-backed split's loader collates UInt8Batch (finished on the device); others the default way (None)."""
    return functools.partial(collate_pixels, finish=dataset.finish) if isinstance(dataset, ImagePixels) else None
