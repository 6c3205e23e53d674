"""k-fold cross-validation: `python -m runner -m dataset.folds=5 'dataset.fold=range(5)'`.

With `dataset.folds=K dataset.fold=i` the dataset's train and val splits are pooled (the test split
never joins: it is for the final model) and dealt into K stratified folds; fold i is the validation
split, the other K-1 train. The deal depends on the pooled labels and `dataset.fold_seed` alone, not on
`trainer.seed`, so every run of a seed group, and every fold's run, sees the same folds. Each builder
folds where its samples are still raw (before training augmentation is attached): in-memory tensors
(`fold_tensors`), torchvision-style datasets and image files (`fold_datasets`), a user's own splits
(`custom.py`, through `fold_positions` and `Pooled`). `dataset.subset` then takes its miniature of each.
"""

from __future__ import annotations

import logging
import zlib

import torch
from torch.utils.data import Dataset, Subset

from runner.common.errors import UserError
from runner.data import introspect
from runner.data.image_files import image_files

log = logging.getLogger(__name__)


def folding(cfg) -> bool:
    """Whether the config asks for a fold (a checkpoint's config from before folds has no such key)."""
    return cfg.get("folds") is not None


def fold_numbers(labels: list[int], folds: int, seed: int) -> list[int]:
    """Each sample's fold, 0..folds-1: stratified and seeded.

    The samples are shuffled (seeded), ordered by class (the shuffle kept within a class), and dealt
    round-robin: within each class the folds' counts differ by at most one, and so do the folds' sizes."""
    generator = torch.Generator().manual_seed(zlib.crc32(f"folds {seed}".encode()))
    shuffled = torch.randperm(len(labels), generator=generator).tolist()
    dealt = sorted(shuffled, key=lambda index: labels[index])  # a stable sort: shuffled within each class
    numbers = [0] * len(labels)
    for place, index in enumerate(dealt):
        numbers[index] = place % folds
    return numbers


def refuse_too_many_folds(labels: list[int], folds: int, names: list[str] | None) -> None:
    """Each fold needs a sample of every class: a class with fewer samples than folds is named."""
    counts: dict[int, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    label, smallest = min(counts.items(), key=lambda item: (item[1], item[0]))
    if smallest < folds:
        name = names[label] if names is not None and label < len(names) else str(label)
        fix = f"dataset.folds={smallest} or fewer" if smallest >= 2 else \
            f"more samples of class {name} (each fold needs one), or dataset.folds=null"
        raise UserError(f"dataset.folds={folds} is more than the {smallest} sample{'s' if smallest > 1 else ''} class "
                        f"{name} has in train+val: a fold would validate without it. Fix: {fix}")


def fold_positions(cfg, labels: list[int], names: list[str] | None = None) -> tuple[list[int], list[int]]:
    """(training positions, validation positions) in the pooled train+val labels, for cfg.fold of cfg.folds; logged."""
    refuse_too_many_folds(labels, cfg.folds, names)
    numbers = fold_numbers(labels, cfg.folds, cfg.fold_seed)
    val = [place for place, number in enumerate(numbers) if number == cfg.fold]
    train = [place for place, number in enumerate(numbers) if number != cfg.fold]
    log.info("dataset.fold=%d of dataset.folds=%d (fold_seed %d): %d train, %d validate, of the %d train+val "
             "samples pooled (stratified by class); the test split as it was",
             cfg.fold, cfg.folds, cfg.fold_seed, len(train), len(val), len(labels))
    return train, val


def fold_tensors(cfg, images: dict, labels: dict) -> tuple[dict, dict]:
    """In-memory splits (digits, synthetic): train and val rows pooled and dealt; test untouched."""
    if not folding(cfg):
        return images, labels
    pooled_images = torch.cat([images["train"], images["val"]])
    pooled_labels = torch.cat([labels["train"], labels["val"]])
    train, val = fold_positions(cfg, pooled_labels.tolist())
    chosen = {"train": torch.as_tensor(train, dtype=torch.long), "val": torch.as_tensor(val, dtype=torch.long)}
    return ({**images, **{s: pooled_images[i] for s, i in chosen.items()}},
            {**labels, **{s: pooled_labels[i] for s, i in chosen.items()}})


class Pooled(Dataset):
    """Chosen samples of several datasets as one: (part, index) pairs, with the labels, image files and class
    names where the parts have them (what introspect, screening, the cache and the checks read)."""

    def __init__(self, parts: list[Dataset], chosen: list[tuple[int, int]], labels: list[int]):
        self.parts, self.chosen, self.targets = parts, chosen, labels
        files = [image_files(part) for part in parts]
        if all(f is not None for f in files):
            self._image_files = [files[part][index] for part, index in chosen]
        names = getattr(parts[0], "classes", None)
        if names is not None:
            self.classes = names

    def __len__(self) -> int:
        return len(self.chosen)

    def __getitem__(self, index: int):
        part, inner = self.chosen[index]
        return self.parts[part][inner]


def beneath(dataset: Dataset) -> tuple[Dataset, list[int]]:
    """(the dataset under any Subsets, the rows of it this one holds)."""
    rows = list(range(len(dataset)))
    while isinstance(dataset, Subset):
        rows = [dataset.indices[row] for row in rows]
        dataset = dataset.dataset
    return dataset, rows


def fold_datasets(cfg, splits: dict[str, Dataset]) -> dict[str, Dataset]:
    """Raw splits (not yet augmented: Flowers-102, CIFAR-10, an image folder): train and val pooled and dealt.

    Splits of one dataset (CIFAR-10's seeded validation, an image folder's seeded split) stay Subsets of it, so
    its uint8 array is still found; splits of two (Flowers-102's, train/ and val/ folders) become `Pooled`."""
    if not folding(cfg):
        return splits
    (train_base, train_rows), (val_base, val_rows) = beneath(splits["train"]), beneath(splits["val"])
    labels = introspect.labels_of(splits["train"]).tolist() + introspect.labels_of(splits["val"]).tolist()
    names = introspect.class_names(splits["train"], cfg.num_classes)
    train, val = fold_positions(cfg, labels, names)
    if train_base is val_base:
        rows = train_rows + val_rows
        return {**splits, "train": Subset(train_base, sorted(rows[p] for p in train)),
                "val": Subset(train_base, sorted(rows[p] for p in val))}
    pooled = [(0, row) for row in train_rows] + [(1, row) for row in val_rows]
    parts = [train_base, val_base]
    return {**splits, **{split: Pooled(parts, [pooled[p] for p in places], [labels[p] for p in places])
                         for split, places in (("train", train), ("val", val))}}
