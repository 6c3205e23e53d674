"""What a dataset holds, without loading its images: labels, image files, class names.

Used by the checks (`python -m runner.check`), the data report (`python -m runner.inspect_data`),
the evaluator's figures and `model.init_output_bias=prior`.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from runner.data.image_files import image_files  # noqa: F401 (the checks and reports ask here)
from runner.data.transforms import TransformedTensors


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


def class_names(dataset: Dataset, num_classes: int) -> list[str]:
    """The dataset's class names where it has them (torchvision's .classes), else the class numbers."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    names = getattr(dataset, "classes", None)
    if names is not None and len(names) == num_classes:
        return [str(name) for name in names]
    return [str(c) for c in range(num_classes)]
