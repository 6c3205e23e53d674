"""Datasets and loaders: `python -m runner dataset=NAME` (digits, flowers102, cifar10, imagefolder, synthetic).

`build_splits(cfg.dataset)` returns {"train", "val", "test"} datasets of (image, label) pairs,
each image a float tensor (channels, height, width) already standardized with the dataset's
mean and std. Construction (what the samples are) is kept apart from the loader (in which
order they come), so a decoded cache or device-side augmentation stays local to this file.

Randomness is a function of (seed, epoch, sample) only: `EpochSampler` draws each epoch's
order from (seed, epoch) and gives every sample its own augmentation seed, so the data of an
epoch is the same with 0 or 8 workers and after a resume.
"""

from __future__ import annotations

import logging
import random
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, TensorDataset
from torchvision import transforms

from runner.errors import UserError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


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


def _stable_seed(*parts) -> int:
    """A seed from several integers/strings that is the same in every process and Python run."""
    return zlib.crc32(repr(parts).encode())


# ---------------------------------------------------------------------------------------------
# transforms


def load_image(path) -> Image.Image:
    """torchvision's PIL loader, with a clear message naming a file that does not decode."""
    try:
        with open(path, "rb") as file:
            image = Image.open(file)
            return image.convert("RGB")
    except OSError as error:
        raise UserError(f"{path} cannot be decoded as an image ({error}). Fix: replace or remove it "
                        "(python -m runner.check checks=[outliers] lists every such file)") from None


def pil_transforms(cfg, train: bool) -> Callable:
    """PIL image -> standardized tensor; with augment=basic, training adds crop and flip."""
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


def tensor_splits(cfg, images: dict, labels: dict) -> dict[str, Dataset]:
    """Standardize in-memory uint/float images once and wrap them as datasets."""
    mean, std = channel_stats(cfg)
    mean_t = torch.tensor(mean).view(1, -1, 1, 1)
    std_t = torch.tensor(std).view(1, -1, 1, 1)
    augment = tensor_augmentation(cfg)
    splits = {}
    for split in SPLITS:
        x = ((images[split] - mean_t) / std_t).contiguous()
        y = labels[split]
        if split == "train" and augment is not None:
            splits[split] = TransformedTensors(x, y, augment)
        else:
            splits[split] = TensorDataset(x, y)
    return splits


def seeded_split(n: int, fractions: tuple[float, float], seed: int) -> dict[str, list[int]]:
    """Indices 0..n-1 split into train/val/test by (val_fraction, test_fraction), seeded."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val, n_test = round(n * fractions[0]), round(n * fractions[1])
    return {
        "val": sorted(order[:n_val]),
        "test": sorted(order[n_val : n_val + n_test]),
        "train": sorted(order[n_val + n_test :]),
    }


# ---------------------------------------------------------------------------------------------
# the datasets


def digits(cfg) -> dict[str, Dataset]:
    """scikit-learn's bundled 8x8 digits: real data, no download."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    index = seeded_split(len(labels), (cfg.val_fraction, cfg.test_fraction), cfg.split_seed)
    return tensor_splits(
        cfg, {s: images[index[s]] for s in SPLITS}, {s: labels[index[s]] for s in SPLITS}
    )


def synthetic(cfg) -> dict[str, Dataset]:
    """One random prototype image per class plus Gaussian noise: learnable, any shape."""
    height, width = image_hw(cfg.image_size)
    generator = torch.Generator().manual_seed(cfg.split_seed)
    prototypes = torch.randn(cfg.num_classes, cfg.channels, height, width, generator=generator)
    images, labels = {}, {}
    for split in SPLITS:
        n = cfg[f"{split}_size"]
        y = torch.arange(n) % cfg.num_classes
        y = y[torch.randperm(n, generator=generator)]
        noise = torch.randn(n, cfg.channels, height, width, generator=generator)
        images[split] = prototypes[y] + cfg.noise * noise
        labels[split] = y
    return tensor_splits(cfg, images, labels)


FLOWERS_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"


def flowers102(cfg) -> dict[str, Dataset]:
    """torchvision's Flowers102 with its official splits, in {root}/flowers-102."""
    from torchvision.datasets import Flowers102

    folder = Path(cfg.root) / "flowers-102"
    expected = "imagelabels.mat, setid.mat and jpg/image_00001.jpg .. jpg/image_08189.jpg"

    def make(split):
        return Flowers102(cfg.root, split=split, transform=pil_transforms(cfg, split == "train"),
                          download=cfg.download, loader=load_image)

    fetch = f"102flowers.tgz (unpacked there into jpg/), imagelabels.mat and setid.mat from {FLOWERS_URL}"
    return {
        split: _open_torchvision(lambda s=split: make(s), "Flowers-102", folder, expected, fetch, cfg)
        for split in SPLITS
    }


def cifar10(cfg) -> dict[str, Dataset]:
    """torchvision's CIFAR-10; validation is a seeded part of the official training set."""
    from torchvision.datasets import CIFAR10

    folder = Path(cfg.root) / "cifar-10-batches-py"
    expected = "data_batch_1 .. data_batch_5, test_batch, batches.meta"
    fetch = "cifar-10-python.tar.gz (unpacked there) from https://www.cs.toronto.edu/~kriz/cifar.html"

    def make(train: bool, augment: bool):
        return _open_torchvision(
            lambda: CIFAR10(cfg.root, train=train, transform=pil_transforms(cfg, augment), download=cfg.download),
            "CIFAR-10", folder, expected, fetch, cfg,
        )

    train_full, val_full = make(True, True), make(True, False)
    order = torch.randperm(len(train_full), generator=torch.Generator().manual_seed(cfg.split_seed)).tolist()
    return {
        "train": Subset(train_full, sorted(order[cfg.val_size :])),
        "val": Subset(val_full, sorted(order[: cfg.val_size])),
        "test": make(False, False),
    }


def imagefolder(cfg) -> dict[str, Dataset]:
    """A folder of class subfolders; root/train, root/val (root/test) when present, else a seeded split."""
    from torchvision.datasets import ImageFolder

    root = Path(cfg.root)
    if not root.is_dir():
        raise UserError(
            f"dataset.root={cfg.root!r} is not a folder. Fix: point dataset.root at a folder of class "
            "subfolders (root/CLASS/image.jpg), or at one with train/ and val/ inside."
        )

    def make(folder: Path, augment: bool):
        try:
            dataset = ImageFolder(folder, transform=pil_transforms(cfg, augment), loader=load_image)
        except (FileNotFoundError, RuntimeError) as error:
            raise UserError(f"no images found under {folder}: {error}. Fix: dataset.root=FOLDER of class subfolders") from None
        if len(dataset.classes) != cfg.num_classes:
            raise UserError(
                f"dataset.num_classes={cfg.num_classes} but {folder} has {len(dataset.classes)} class "
                f"folders. Fix: dataset.num_classes={len(dataset.classes)}"
            )
        return dataset

    if (root / "train").is_dir() and (root / "val").is_dir():
        splits = {"train": make(root / "train", True), "val": make(root / "val", False)}
        test = root / "test"
        splits["test"] = make(test, False) if test.is_dir() else Subset(splits["val"], [])
        return splits
    augmented, plain = make(root, True), make(root, False)
    index = seeded_split(len(plain), (cfg.val_fraction, cfg.test_fraction), cfg.split_seed)
    return {
        "train": Subset(augmented, index["train"]),
        "val": Subset(plain, index["val"]),
        "test": Subset(plain, index["test"]),
    }


def _open_torchvision(make: Callable, name: str, folder: Path, expected: str, fetch: str, cfg):
    """Build a torchvision dataset; a missing download or folder becomes one clear message."""
    try:
        return make()
    except (RuntimeError, URLError, OSError) as error:
        if cfg.download:
            raise UserError(
                f"could not download {name} into {folder} ({error}). Fix: check the internet "
                f"connection, or put {fetch} into {folder} yourself, "
                "or set dataset.root=FOLDER that already holds them"
            ) from None
        raise UserError(
            f"{name} not found in {folder}: expected {expected}. Fix: set dataset.download=true "
            f"(needs internet), or dataset.root=FOLDER whose {folder.name}/ holds those files"
        ) from None


DATASETS: dict[str, Callable[..., dict[str, Dataset]]] = {
    "digits": digits,
    "synthetic": synthetic,
    "flowers102": flowers102,
    "cifar10": cifar10,
    "imagefolder": imagefolder,
}


def build_splits(cfg) -> dict[str, Dataset]:
    """The dataset's train/val/test splits, cut to a seeded miniature when `subset` is set."""
    splits = DATASETS[cfg.name](cfg)
    if cfg.subset is not None:
        splits = {split: subset(ds, cfg.subset, cfg.split_seed, split) for split, ds in splits.items()}
    for split, ds in splits.items():
        if split != "test" and len(ds) == 0:
            raise UserError(f"the {split} split of dataset {cfg.name} is empty. Fix: check dataset.root and the split settings")
    return splits


def labels_of(dataset: Dataset) -> torch.Tensor:
    """Every label of a dataset, without loading its images where the dataset keeps them apart."""
    if isinstance(dataset, Subset):
        return labels_of(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1]
    if isinstance(dataset, TransformedTensors):
        return dataset.labels
    for attribute in ("_labels", "targets"):  # torchvision's Flowers102 / CIFAR10, ImageFolder
        if hasattr(dataset, attribute):
            return torch.as_tensor(getattr(dataset, attribute), dtype=torch.long)
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


def image_files(dataset: Dataset) -> list[Path] | None:
    """The image file of each sample for datasets read from files (Flowers102, ImageFolder), else None."""
    if isinstance(dataset, Subset):
        files = image_files(dataset.dataset)
        return None if files is None else [files[i] for i in dataset.indices]
    if hasattr(dataset, "_image_files"):
        return [Path(f) for f in dataset._image_files]
    if hasattr(dataset, "samples"):
        return [Path(path) for path, _ in dataset.samples]
    return None


def class_names(dataset: Dataset, num_classes: int) -> list[str]:
    """The dataset's class names where it has them (torchvision's .classes), else the class numbers."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    names = getattr(dataset, "classes", None)
    if names is not None and len(names) == num_classes:
        return [str(name) for name in names]
    return [str(c) for c in range(num_classes)]


def subset(dataset: Dataset, size: int, seed: int, split: str) -> Dataset:
    """A fixed miniature: the same `size` samples of this split in every run (seeded by split name)."""
    if size >= len(dataset):
        return dataset
    generator = torch.Generator().manual_seed(_stable_seed(seed, split))
    return Subset(dataset, sorted(torch.randperm(len(dataset), generator=generator)[:size].tolist()))


# ---------------------------------------------------------------------------------------------
# loaders


class EpochSampler(Sampler):
    """Yields (index, sample_seed): the order from (seed, epoch), a seed for each sample's augmentation.

    With several processes (torchrun), each learning batch of the epoch's order is dealt out
    to the ranks (rank r takes positions r, r + world_size, ...), and the epoch is cut to a
    multiple of world_size so that every process runs the same number of steps. `start`
    skips the samples of the epoch already trained on (a resume from mid-epoch).
    """

    def __init__(self, size: int, seed: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.size, self.seed, self.batch_size = size, seed, batch_size
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    @property
    def samples_per_epoch(self) -> int:
        """All processes together."""
        return self.size - self.size % self.world_size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return len(range(self.rank, self.samples_per_epoch - self.start, self.world_size))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(_stable_seed(self.seed, self.epoch))
        order = torch.randperm(self.size, generator=generator)[: self.samples_per_epoch].tolist()
        for first in range(self.start, len(order), self.batch_size):
            for index in order[first : first + self.batch_size][self.rank :: self.world_size]:
                yield index, _stable_seed(self.seed, self.epoch, index)


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


def _seed_worker(worker_id: int) -> None:
    """numpy and random in a worker, seeded from the torch seed the loader gave it."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def train_loader(dataset: Dataset, micro_batch_size: int, seed: int, num_workers: int, pin_memory: bool,
                 batch_size: int | None = None, rank: int = 0, world_size: int = 1):
    """Micro-batches of the training split in a seeded per-epoch order; call sampler.set_epoch(e)."""
    sampler = EpochSampler(len(dataset), seed, batch_size or micro_batch_size, rank, world_size)
    loader = DataLoader(
        SeededSamples(dataset),
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
    )
    return loader, sampler


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int, pin_memory: bool) -> DataLoader:
    """Every sample exactly once, in order (no shuffling, no dropped last batch)."""
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
        pin_memory=pin_memory, worker_init_fn=_seed_worker, drop_last=False,
    )
