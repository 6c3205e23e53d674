"""What a dataset holds at an index, before its transform: `python -m runner.inspect_data` shows it as
stored, and `python -m runner.check checks=[splits]` hashes it to find images in two splits.

Reading `dataset[index]` instead would give a random augmented draw where the split augments, so
neither the picture nor the hash would be the sample's own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Subset, TensorDataset

from runner.data import introspect
from runner.data.custom import UserSplit
from runner.data.pixels import ImagePixels
from runner.data.transforms import TransformedTensors


def stored_item(dataset, index: int):
    """The image a dataset holds at index, before its transform (augmentation included): a path, a PIL image,
    a uint8 (height, width, channels) array or a standardized tensor; through Subsets to the dataset beneath."""
    return stored_reader(dataset)(index)


def stored_reader(dataset) -> Callable[[int], object]:
    """stored_item's reading of one dataset, worked out once: a split of N files is listed once, not N times."""
    files = introspect.image_files(dataset)
    if files is not None:
        return files.__getitem__
    indices = list(range(len(dataset)))
    while isinstance(dataset, Subset):
        dataset, indices = dataset.dataset, [dataset.indices[i] for i in indices]
    if isinstance(dataset, TransformedTensors):
        return lambda index: dataset.images[indices[index]]
    if isinstance(dataset, TensorDataset):
        return lambda index: dataset.tensors[0][indices[index]]
    if isinstance(dataset, ImagePixels):
        return lambda index: dataset.pixels(indices[index]).numpy()
    if isinstance(dataset, UserSplit):  # the user's item itself; a transform inside their dataset is theirs
        return lambda index: dataset.raw(indices[index])[0]
    return lambda index: dataset[indices[index]][0]


def content_hash(item) -> str:
    """A stored item's hash: of the file's bytes for a path, else of its pixels."""
    if isinstance(item, (str, Path)):
        return hashlib.sha1(Path(item).read_bytes()).hexdigest()
    if isinstance(item, Image.Image):
        return hashlib.sha1(item.tobytes()).hexdigest()
    if isinstance(item, torch.Tensor):
        item = item.numpy()
    return hashlib.sha1(np.ascontiguousarray(item).tobytes()).hexdigest()
