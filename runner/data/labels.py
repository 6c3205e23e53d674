"""The labels every split hands the model, checked at start: `python -m runner dataset=custom ...`.

`check_labels(cfg, splits)` runs where the splits are built (datasets.build_screened_splits), so a
training run, the evaluator and the checks all refuse the same way, before the first step: a label
outside 0..num_classes-1 in any split (it would stop training at its first step with an IndexError,
the start with a bincount traceback, or, in val or test only, the evaluator after a finished run) is
one line naming the split, the sample, its value and the fix. Classes that cannot be learned (in
val or test but not in train) or that no split has are named in a warning. Whether each label is a
whole class number at all is checked where a user's labels come in (custom.class_number).
"""

from __future__ import annotations

import logging
import numbers

import numpy as np
import torch
from torch.utils.data import Dataset

from runner.common.errors import UserError
from runner.data.introspect import labels_of

log = logging.getLogger(__name__)


def listed(values: list, most: int = 5) -> str:
    """'3, 7, 12' or '3, 7, 12, 15, 20 and 4 more'."""
    return ", ".join(str(v) for v in values[:most]) + (f" and {len(values) - most} more" if len(values) > most else "")


def class_number(label, where: str, num_classes: int) -> int:
    """A label as the class number it is, or one line saying why it is none (`where`: '... whose label 3')."""
    fix = f"Fix: return integer class numbers 0..{num_classes - 1} as labels"
    if isinstance(label, torch.Tensor | np.ndarray):
        if label.size == 1 if isinstance(label, np.ndarray) else label.numel() == 1:
            label = label.item()
        else:
            shape = tuple(label.shape)
            raise UserError(f"{where} is a {type(label).__name__} of shape {shape}, not one class number (one-hot "
                            f"or soft labels?). {fix} (the loss takes the class number of each sample)")
    if isinstance(label, numbers.Integral):
        return int(label)
    if isinstance(label, numbers.Real) and float(label).is_integer():
        return int(label)  # 1.0: a class number stored as a float
    shown = f"{float(label):.6g}" if isinstance(label, numbers.Real) else repr(label)  # 0.7, not 0.699999988
    raise UserError(f"{where} is {shown}, not a whole class number (int() would make it "
                    f"{_truncated(label)}). {fix}")


def _truncated(label) -> str:
    try:
        return repr(int(label))
    except (TypeError, ValueError, OverflowError):
        return "an error"


def check_labels(cfg, splits: dict[str, Dataset]) -> None:
    """Every split's labels in 0..num_classes-1 (one line naming the first that is not); warnings for classes
    that cannot be learned or that no split has."""
    n = cfg.num_classes
    labels = {split: labels_of(dataset) for split, dataset in splits.items() if len(dataset)}
    for split, y in labels.items():
        outside = ((y < 0) | (y >= n)).nonzero().flatten()
        if len(outside):
            index, low, high = int(outside[0]), int(y.min()), int(y.max())
            count = f"{len(outside)} label{'s' if len(outside) > 1 else ''}"
            raise UserError(f"the {split} split of dataset {cfg.name} has {count} outside 0..{n - 1} "
                            f"(dataset.num_classes={n}): sample {index} is {int(y[index])}; its labels run "
                            f"{low}..{high}. Fix: {label_fix(low, high, n)}")
    if cfg.get("subset") is not None:
        return  # a miniature: fewer classes in a split is what it is
    trained = set(labels["train"].unique().tolist()) if "train" in labels else set()
    for split, y in labels.items():
        unlearnable = sorted(set(y.unique().tolist()) - trained)
        if split != "train" and unlearnable:
            one = len(unlearnable) == 1
            log.warning("class%s %s ha%s no training sample but %s in the %s split: the model cannot learn %s",
                        "" if one else "es", listed(unlearnable), "s" if one else "ve", "is" if one else "are", split,
                        "it" if one else "them")
    used = set().union(*(set(y.unique().tolist()) for y in labels.values())) if labels else set()
    unused = [c for c in range(n) if c not in used]
    if unused:
        log.warning("dataset.num_classes=%d but no split has a sample of class %s: the model has outputs it never "
                    "trains (if there are %d classes, dataset.num_classes=%d)", n, listed(unused), n - len(unused),
                    n - len(unused))


def label_fix(low: int, high: int, n: int) -> str:
    if low < 0:
        return (f"leave the samples without a class out of the split; labels are class numbers 0..{n - 1} "
                "(-1 for 'no label' cannot be trained on)")
    if low == 1 and high == n:
        return f"number the classes from 0 (these look numbered from 1: subtract 1), or dataset.num_classes={high + 1}"
    return f"dataset.num_classes={high + 1} if there are {high + 1} classes, else number the classes 0..{n - 1}"
