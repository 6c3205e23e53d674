"""The datasets: `python -m runner dataset=NAME` (digits, flowers102, cifar10, imagefolder, synthetic, custom).

`build_splits(cfg.dataset)` returns {"train", "val", "test"} datasets of (image, label) pairs,
each image a float tensor (channels, height, width) already standardized with the dataset's
mean and std. Construction (what the samples are) is kept apart from the loader (in which
order they come, `loaders.py`) and the per-sample transform (`transforms.py`).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from runner.common.errors import UserError
from runner.data import introspect
from runner.data.custom import custom
from runner.data.folders import refuse_empty_class_folders, refuse_other_classes, refuse_wrong_level
from runner.data.folds import fold_datasets, fold_tensors
from runner.data.image_files import Screening, screen
from runner.data.labels import check_labels
from runner.data.pixels import pixel_splits
from runner.data.shapes import check_shapes
from runner.data.transforms import (
    TransformedTensors,
    channel_stats,
    image_hw,
    tensor_augmentation,
)

log = logging.getLogger(__name__)


SPLITS = ("train", "val", "test")


def stable_seed(*parts) -> int:
    """A seed from several integers/strings that is the same in every process and Python run."""
    return zlib.crc32(repr(parts).encode())


def tensor_splits(cfg, images: dict, labels: dict) -> dict[str, Dataset]:
    """Standardize in-memory uint/float images once and wrap them as datasets (train and val dealt anew into
    folds with dataset.folds)."""
    images, labels = fold_tensors(cfg, images, labels)
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
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True)
class Download:
    """Where a torchvision dataset lives under dataset.root, for the messages when it is not there."""

    name: str  # "Flowers-102"
    folder: str  # the folder torchvision reads under dataset.root: flowers-102
    marker: str  # a file of that folder: found elsewhere, it says where the data is
    expected: str  # what the folder holds
    fetch: str  # how to put it there by hand, where {root} and {folder} are the paths
    into: str  # where torchvision downloads to: "{folder}" or "{root}"


FLOWERS = Download("Flowers-102", "flowers-102", "imagelabels.mat",
                   "imagelabels.mat, setid.mat and jpg/image_00001.jpg .. jpg/image_08189.jpg",
                   f"put 102flowers.tgz (unpacked there into jpg/), imagelabels.mat and setid.mat from {FLOWERS_URL} "
                   "into {folder} yourself", "{folder}")
CIFAR10 = Download("CIFAR-10", "cifar-10-batches-py", "batches.meta",
                   "data_batch_1 .. data_batch_5, test_batch, batches.meta",
                   f"put cifar-10-python.tar.gz from {CIFAR_URL} into {{root}} yourself and unpack it there "
                   "(it holds cifar-10-batches-py/)", "{root}")


def flowers102(cfg) -> dict[str, Dataset]:
    """torchvision's Flowers102 with its official splits, in {root}/flowers-102."""
    from torchvision.datasets import Flowers102

    def make(split):
        return Flowers102(cfg.root, split=split, download=cfg.download)  # files and labels: pixels.ImagePixels reads

    return fold_datasets(cfg, {split: _open_torchvision(lambda s=split: make(s), FLOWERS, cfg) for split in SPLITS})


def cifar10(cfg) -> dict[str, Dataset]:
    """torchvision's CIFAR-10; validation is a seeded part of the official training set."""
    from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

    def make(train: bool):  # its uint8 array and labels: pixels.ImagePixels reads them
        return _open_torchvision(lambda: TorchvisionCIFAR10(cfg.root, train=train, download=cfg.download), CIFAR10, cfg)

    train_full = make(True)
    order = torch.randperm(len(train_full), generator=torch.Generator().manual_seed(cfg.split_seed)).tolist()
    return fold_datasets(cfg, {
        "train": Subset(train_full, sorted(order[cfg.val_size :])),
        "val": Subset(train_full, sorted(order[: cfg.val_size])),
        "test": make(False),
    })


def imagefolder(cfg) -> dict[str, Dataset]:
    """A folder of class subfolders; root/train, root/val (root/test) when present, else a seeded split."""
    from torchvision.datasets import ImageFolder

    root = Path(cfg.root)
    if not root.is_dir():
        raise UserError(
            f"dataset.root={cfg.root!r} is not a folder. Fix: point dataset.root at a folder of class "
            "subfolders (root/CLASS/image.jpg), or at one with train/ and val/ inside."
        )
    refuse_wrong_level(root)  # as validation does: the evaluator builds from a saved config

    def make(folder: Path):
        refuse_empty_class_folders(folder)
        try:
            dataset = ImageFolder(folder)  # files and labels: pixels.ImagePixels reads them
        except (FileNotFoundError, RuntimeError) as error:
            raise UserError(f"no images found under {folder}: {error}. Fix: dataset.root=FOLDER of class subfolders") from None
        if len(dataset.classes) != cfg.num_classes:
            raise UserError(
                f"dataset.num_classes={cfg.num_classes} but {folder} has {len(dataset.classes)} class "
                f"folders. Fix: dataset.num_classes={len(dataset.classes)}"
            )
        return dataset

    if (root / "train").is_dir() and (root / "val").is_dir():
        for other in ("val", "test"):
            if (root / other).is_dir():
                refuse_other_classes(root / "train", root / other)
        splits = {"train": make(root / "train"), "val": make(root / "val")}
        test = root / "test"
        splits["test"] = make(test) if test.is_dir() else Subset(splits["val"], [])
        return fold_datasets(cfg, splits)
    every = make(root)
    index = seeded_split(len(every), (cfg.val_fraction, cfg.test_fraction), cfg.split_seed)
    return fold_datasets(cfg, {split: Subset(every, index[split]) for split in SPLITS})


def _open_torchvision(make: Callable, data: Download, cfg):
    """Build a torchvision dataset; a missing download or folder becomes one clear message, and folders the failed
    download made and left empty are removed (they would pass for the data's folder)."""
    root = Path(cfg.root)
    folder = root / data.folder
    missing = [path for path in (root, folder) if not path.exists()]
    try:
        return make()
    except (RuntimeError, URLError, OSError) as error:
        for path in reversed(missing):  # the folder, then the root, where this attempt made them and left them empty
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        misplaced = _misplaced(root, data)
        if misplaced:
            raise UserError(f"{data.name} not found in {folder}: {misplaced}") from None
        if cfg.download:
            raise UserError(
                f"could not download {data.name} into {data.into.format(root=root, folder=folder)} ({error}). Fix: check the "
                f"internet connection, or {data.fetch.format(root=root, folder=folder)}, "
                f"or set dataset.root=FOLDER whose {data.folder}/ holds them"
            ) from None
        raise UserError(
            f"{data.name} not found in {folder}: expected {data.expected}. Fix: set dataset.download=true "
            f"(needs internet), or dataset.root=FOLDER whose {data.folder}/ holds those files"
        ) from None


def _misplaced(root: Path, data: Download) -> str | None:
    """Where the data is when it is one folder off (unpacked inside its own folder, or root set to that folder):
    what is wrong and the dataset.root that fits, or None."""
    folder = root / data.folder
    if (folder / data.folder / data.marker).exists():
        return (f"its files are one folder deeper, in {folder / data.folder}. Fix: dataset.root={folder}")
    if (root / data.marker).exists():
        if root.name == data.folder:
            return f"dataset.root is the {data.folder} folder itself. Fix: dataset.root={root.parent}"
        return (f"dataset.root={str(root)!r} holds the files themselves, but they are read from its {data.folder}/ "
                f"subfolder. Fix: move them into {folder}")
    return None


DATASETS: dict[str, Callable[..., dict[str, Dataset]]] = {
    "digits": digits,
    "synthetic": synthetic,
    "flowers102": flowers102,
    "cifar10": cifar10,
    "imagefolder": imagefolder,
    "custom": custom,  # the user's own callable, dataset._target_ (runner/data/custom.py)
}


def build_splits(cfg) -> dict[str, Dataset]:
    """The dataset's train/val/test splits: a seeded miniature with `subset`, bad images screened."""
    return build_screened_splits(cfg)[0]


def build_screened_splits(cfg, refuse_bad: bool = True) -> tuple[dict[str, Dataset], Screening]:
    """build_splits, and what screening the image files found (for the run's log and run.json).

    refuse_bad=False keeps files that do not decode under bad_images=raise (for the checks).
    """
    splits = DATASETS[cfg.name](cfg)
    if cfg.subset is not None:
        splits = {split: subset(ds, cfg.subset, cfg.split_seed, split) for split, ds in splits.items()}
    splits, screening = screen(cfg, splits, refuse_bad)
    splits = pixel_splits(cfg, splits)  # file-backed splits: uint8 pixels, finished on the device
    if screening.describe():
        log.info("%s", screening.describe())
    for split, ds in splits.items():
        if split != "test" and len(ds) == 0:
            raise UserError(f"the {split} split of dataset {cfg.name} is empty. Fix: check dataset.root and the split settings")
    check_labels(cfg, splits)  # in 0..num_classes-1 in every split, before the first step (or the evaluator) meets one
    check_shapes(cfg, splits)  # the images the model is built for (the config) are the images the data gives
    return splits, screening


def subset(dataset: Dataset, size: int, seed: int, split: str) -> Dataset:
    """A fixed, stratified miniature: the same `size` samples of this split in every run.

    The same count per class as far as possible (a class with fewer samples gives all it has),
    so a miniature keeps the classes and their balance; which samples is seeded by split name.
    """
    if size >= len(dataset):
        return dataset
    labels = introspect.labels_of(dataset).tolist()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(stable_seed(seed, split))).tolist()
    taken_of_class: dict[int, int] = {}
    ranked = []  # (how many of its class came before it in the shuffle, its place): round-robin over classes
    for place, index in enumerate(order):
        rank = taken_of_class.get(labels[index], 0)
        taken_of_class[labels[index]] = rank + 1
        ranked.append((rank, place, index))
    return Subset(dataset, sorted(index for _, _, index in sorted(ranked)[:size]))
