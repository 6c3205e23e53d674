"""Two tasks on disjoint images of scikit-learn's digits, for the transfer test (tests/test_transfer.py):
`dataset=custom dataset._target_=tests.transfer_data.digits_task +dataset.task=digits|parity`.

`digits`: the ten classes, on images 0..999; `parity`: even or odd, learned from the first `train_size`
of images 1000..1399 and validated on 1400..1797. A network pretrained on the first task has
seen none of the second's images.
"""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset


def digits_task(task: str, train_size: int = 400) -> dict[str, TensorDataset]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0 - 0.5) / 0.5
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    if task == "digits":
        train, val = slice(0, 1000), slice(1400, 1797)
    else:
        train, val, labels = slice(1000, 1000 + train_size), slice(1400, 1797), labels % 2
    return {"train": TensorDataset(images[train], labels[train]), "val": TensorDataset(images[val], labels[val])}
