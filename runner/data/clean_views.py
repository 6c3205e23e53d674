"""A split without its training augmentation: `python -m runner.check checks=[overfit_batch,input_independent]`.

The checks that learn a few samples by heart, or compare training on real and zeroed inputs, judge the model
and the loss, not the augmentation: they learn the training split as the evaluator sees a split (no crop or
flip, no dataset.auto_augment or random_erasing; mixup/cutmix are the training step's and never reach them).
"""

from __future__ import annotations

import copy
import dataclasses

from torch.utils.data import Dataset, Subset, TensorDataset

from runner.data.custom import UserSplit
from runner.data.pixels import ImagePixels
from runner.data.transforms import TransformedTensors, pil_transforms


def unaugmented(dataset: Dataset) -> Dataset:
    """The same samples as the evaluation splits are made (the dataset itself where it has no augmentation)."""
    if isinstance(dataset, Subset):
        return Subset(unaugmented(dataset.dataset), dataset.indices)
    if isinstance(dataset, TransformedTensors):
        return TensorDataset(dataset.images, dataset.labels)
    if isinstance(dataset, ImagePixels):
        clean = copy.copy(dataset)
        clean.finish = dataclasses.replace(dataset.finish, augment=False, ops=None)
        return clean
    if isinstance(dataset, UserSplit):
        clean = copy.copy(dataset)
        clean.transform = pil_transforms(dataset.cfg, train=False)
        return clean
    return dataset
