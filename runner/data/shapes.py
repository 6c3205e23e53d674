"""The shape every split's images have, checked against the one the model is built for, at start.

The model is built from the config (dataset.channels, dataset.image_size), the images come from the
data: where the two disagree a run used to crash at its first step (or, for val alone, at the first
evaluation) with `mat1 and mat2 shapes cannot be multiplied`. `check_shapes(cfg, splits)` looks at
the first image of every split as the model would get it and refuses a mismatch in one line naming
both shapes and the setting that fits the data; `tensor_fix` is the same advice for one tensor of a
user's dataset (runner/data/custom.py checks each one it hands over).
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from runner.common.errors import UserError
from runner.data.pixels import ImagePixels
from runner.data.transforms import image_hw


def shown(shape) -> str:
    """(3, 12, 12) -> '3x12x12'."""
    return "x".join(str(int(s)) for s in shape)


def expected_shape(cfg) -> tuple[int, int, int]:
    return (int(cfg.channels), *image_hw(cfg.image_size))


def built_for(cfg) -> str:
    height, width = image_hw(cfg.image_size)
    return (f"the model is built for {shown(expected_shape(cfg))} (dataset.channels={cfg.channels}, "
            f"dataset.image_size=[{height},{width}]")


def tensor_fix(shape: tuple[int, ...], cfg, first: bool) -> str:
    """How to make an image of `shape` fit the model. first: the first training image, which sets the shape (the
    fix is a setting); otherwise the other images must follow it."""
    channels = int(cfg.channels)
    if len(shape) == 2:
        return "return (channels, height, width) tensors: image.unsqueeze(0) for a grayscale (height, width) one"
    if len(shape) != 3:
        return "return (channels, height, width) tensors, one image per item"
    c, h, w = shape
    if c not in (1, 3, channels) and w in (1, 3, 4, channels):
        return "return (channels, height, width) tensors: image.permute(2, 0, 1) for a (height, width, channels) one"
    if not first:
        return (f"return images of one shape in every split ({shown(expected_shape(cfg))}, as the train split's), "
                "or PIL images, which runner resizes")
    settings = [f"dataset.channels={c}"] if c != channels else []
    if (h, w) != image_hw(cfg.image_size):
        settings.append(f"dataset.image_size=[{h},{w}]")
    return " ".join(settings)


def check_shapes(cfg, splits: dict[str, Dataset]) -> None:
    """The first image of each split as the model gets it must be (channels, height, width) of the config."""
    expected = expected_shape(cfg)
    for split in ("train", "val", "test"):
        dataset = splits.get(split)
        if dataset is None or not len(dataset):
            continue
        if isinstance(dataset, ImagePixels) and dataset.files is not None:
            continue  # decoded to dataset.channels, finished at dataset.image_size: the shape by construction (and a
            # file that does not decode is the screening's to name, or, with refuse_bad=False, the checks')
        with torch.random.fork_rng(devices=[]):  # an augmented sample draws random numbers: leave no trace
            image = dataset[0][0]
        shape = tuple(image.shape) if hasattr(image, "shape") else None
        if shape != expected:
            what = shown(shape) if shape is not None else f"a {type(image).__name__}"
            raise UserError(f"the {split} split of dataset {cfg.name} gives images of {what}, but {built_for(cfg)}). "
                            f"Fix: {tensor_fix(shape or (), cfg, first=split == 'train')}")
