"""A user's own data: `python -m runner dataset=custom dataset._target_=my_project.data.make_splits`.

The callable gets, by keyword, each key of the dataset config that its signature names (extra
keys come with `+dataset.KEY=VALUE`) and returns a mapping of split name to a torch Dataset:
"train" and "val" required, "test" optional. Each item is (image, label): a PIL image, which
runner resizes, standardizes and (training, augment=basic) augments as it does its own files,
or a (channels, height, width) float tensor, used as it is. A result of another shape stops
the run at start with one line saying what came back and what is expected.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import torch
from hydra._internal.utils import _locate
from PIL import Image
from torch.utils.data import Dataset, Subset

from runner.common.errors import UserError
from runner.data.folds import Pooled, fold_positions, folding
from runner.data.labels import class_number, listed
from runner.data.shapes import built_for, expected_shape, shown, tensor_fix
from runner.data.transforms import as_rgb, pil_transforms

EXPECTED = ('a mapping {"train": Dataset, "val": Dataset, "test": Dataset (optional)} whose items are '
            "(image, label), the image a PIL image or a (channels, height, width) float tensor")


NOT_FINITE_FIX = "replace those values, or leave those samples out (a NaN input makes the loss NaN)"
PIL_FIX = "return it as an 8-bit or 16-bit PIL image, or as a (channels, height, width) float tensor (used as it is)"


class UserSplit(Dataset):
    """One split of the user's: PIL images go through runner's transforms, tensors as they are."""

    def __init__(self, dataset: Dataset, cfg, train: bool, split: str, target: str):
        self.dataset, self.split, self.target = dataset, split, target
        self.transform = pil_transforms(cfg, train)
        self.channels, self.num_classes = cfg.channels, cfg.num_classes
        self.cfg, self.shape = cfg, expected_shape(cfg)
        # the labels without the images where the dataset keeps them apart (torchvision's habit); else every
        # item is read once, and its image, where a tensor, checked for NaN and inf here rather than as "loss nan"
        labels = next((getattr(dataset, a) for a in ("targets", "labels") if getattr(dataset, a, None) is not None), None)
        if labels is not None and not isinstance(labels, str) and hasattr(labels, "__len__") \
                and len(labels) == len(dataset):  # not, say, a list of class names
            self.targets = [self.label(y, i) for i, y in enumerate(labels)]
            return
        self.targets, not_finite = [], []
        for index in range(len(self)):
            image, label = self.raw(index)
            self.targets.append(self.label(label, index))
            if isinstance(image, torch.Tensor) and image.is_floating_point() and not torch.isfinite(image).all():
                not_finite.append(index)
        if not_finite:
            count = f"{len(not_finite)} image{'s' if len(not_finite) > 1 else ''}"
            raise UserError(f"{target} returned a {split} split with NaN or inf in {count} (samples "
                            f"{listed(not_finite, 10)}). Fix: {NOT_FINITE_FIX}")

    def label(self, label, index: int) -> int:
        return class_number(label, f"{self.target} returned a {self.split} split whose label {index}", self.num_classes)

    def __len__(self) -> int:
        return len(self.dataset)

    def raw(self, index: int) -> tuple:
        item = self.dataset[index]
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise UserError(f"{self.target} returned a {self.split} split whose item {index} is a "
                            f"{type(item).__name__}, not an (image, label) pair. Fix: return {EXPECTED}")
        return item

    def __getitem__(self, index: int):
        image, label = self.raw(index)
        if isinstance(image, Image.Image):
            where = f"{self.target}'s {self.split} image {index}"
            return self.transform(as_rgb(image, where, PIL_FIX)), self.label(label, index)
        if isinstance(image, torch.Tensor):
            if tuple(image.shape) != self.shape:  # used as it is: the model is built for the config's shape
                first = self.split == "train" and index == 0
                raise UserError(f"{self.target} returned a {self.split} split whose image {index} is a "
                                f"{shown(image.shape)} tensor, but {built_for(self.cfg)}; tensors are used as they "
                                f"are). Fix: {tensor_fix(tuple(image.shape), self.cfg, first)}")
            if image.is_floating_point() and not torch.isfinite(image).all():
                raise UserError(f"{self.target} returned a {self.split} split whose image {index} holds NaN or inf. "
                                f"Fix: {NOT_FINITE_FIX}")
            return image.float(), self.label(label, index)
        shape = tuple(image.shape) if hasattr(image, "shape") else ""
        raise UserError(f"{self.target} returned a {self.split} split whose image {index} is a "
                        f"{type(image).__name__}{shape}, for dataset.channels={self.channels}. Fix: return {EXPECTED}")


def call_target(cfg) -> object:
    """The user's callable, called with the config keys its signature names."""
    function = _locate(cfg._target_)
    parameters = inspect.signature(function).parameters
    takes_any = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return function(**{key: cfg[key] for key in cfg if key != "_target_" and (takes_any or key in parameters)})


def folded(cfg, train: UserSplit, val: UserSplit) -> dict[str, UserSplit]:
    """dataset.folds: the user's train and val items pooled and dealt into folds, then prepared anew (the training
    fold augmented, the validation fold not); their labels, read once already, go along."""
    labels = train.targets + val.targets
    pooled = [(0, index) for index in range(len(train))] + [(1, index) for index in range(len(val))]
    places = dict(zip(("train", "val"), fold_positions(cfg, labels), strict=True))
    return {split: UserSplit(Pooled([train.dataset, val.dataset], [pooled[p] for p in chosen],
                                    [labels[p] for p in chosen]), cfg, split == "train", split, cfg._target_)
            for split, chosen in places.items()}


def custom(cfg) -> dict[str, Dataset]:
    """dataset=custom: the user's splits, checked and wrapped."""
    result = call_target(cfg)
    what = type(result).__name__
    if not isinstance(result, Mapping) or not {"train", "val"} <= set(result):
        keys = f" with keys {sorted(result)}" if isinstance(result, Mapping) else ""
        raise UserError(f"{cfg._target_} returned a {what}{keys}. Fix: return {EXPECTED}")
    unknown = set(result) - {"train", "val", "test"}
    if unknown:
        raise UserError(f"{cfg._target_} returned splits {sorted(unknown)} besides train/val/test. Fix: return {EXPECTED}")
    for split, dataset in result.items():
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise UserError(f"{cfg._target_} returned a {type(dataset).__name__} as its {split} split. "
                            f"Fix: return {EXPECTED}")
    splits = {split: UserSplit(dataset, cfg, split == "train", split, cfg._target_) for split, dataset in result.items()}
    if folding(cfg):
        splits = {**splits, **folded(cfg, splits["train"], splits["val"])}
    splits.setdefault("test", Subset(splits["val"], []))
    for dataset in splits.values():  # a wrong item says so now, not in a DataLoader worker an hour in
        if len(dataset):
            dataset[0]
    return splits
