"""What a dataset holds at an index, before its transform: `python -m runner.inspect_data` shows it as
stored, and `python -m runner.check checks=[splits]` hashes it to find images in two splits.

Reading `dataset[index]` instead would give a random augmented draw where the split augments, so
neither the picture nor the hash would be the sample's own.
"""

from __future__ import annotations

import hashlib
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
    while isinstance(dataset, Subset):
        dataset, index = dataset.dataset, dataset.indices[index]
    files = introspect.image_files(dataset)
    if files is not None:
        return files[index]
    if isinstance(dataset, TransformedTensors):
        return dataset.images[index]
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[0][index]
    if isinstance(dataset, ImagePixels):
        return dataset.pixels(index).numpy()
    if isinstance(dataset, UserSplit):  # the user's item itself; a transform inside their dataset is theirs
        return dataset.raw(index)[0]
    return dataset[index][0]


def content_hash(item) -> str:
    """A stored item's hash: of the file's bytes for a path, else of its pixels."""
    if isinstance(item, (str, Path)):
        return hashlib.sha1(Path(item).read_bytes()).hexdigest()
    if isinstance(item, Image.Image):
        return hashlib.sha1(item.tobytes()).hexdigest()
    if isinstance(item, torch.Tensor):
        item = item.numpy()
    return hashlib.sha1(np.ascontiguousarray(item).tobytes()).hexdigest()
