"""What every check of `python -m runner.check +experiment=flowers` looks at and gives back.

A `Setup` is the composed config, its splits and a way to make a fresh model, built by
`setup_for` as training would build them; a `Result` is one check's figure, expectation,
verdict and fix. The checks (data.py, model.py, training.py), the data report and the
learning-rate range test all start from a Setup.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from runner import models
from runner.data import datasets, introspect
from runner.training.losses import Loss, build_loss, summed_loss


@dataclass
class Result:
    check: str
    figure: str
    expected: str
    verdict: str  # PASS | WARN | FAIL
    fix: str = ""
    details: dict = field(default_factory=dict)


@dataclass
class Setup:
    """What the checks look at: the composed config, its splits, and a way to make a fresh model."""

    cfg: object
    splits: dict
    make_model: Callable[..., nn.Module]  # make_model(init_output_bias="none"|"prior") -> a fresh model
    device: torch.device = torch.device("cpu")

    @property
    def num_classes(self) -> int:
        return self.cfg.dataset.num_classes

    @functools.cached_property
    def loss(self) -> Loss:
        """The loss the training loop is configured with (loss=...): the checks train and measure with it."""
        return build_loss(self.cfg.loss)

    def loss_per_sample(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The configured loss of each sample (shape (N,)): one sample at a time where the loss returns a mean."""
        value = self.loss(logits.float(), y)
        if isinstance(value, torch.Tensor) and tuple(value.shape) == (len(y),):
            return value.detach()
        return torch.stack([self.mean_loss(logits[i:i + 1], y[i:i + 1]).detach() for i in range(len(y))])

    def mean_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The configured loss of a batch, per sample on average (as the loop computes it)."""
        return summed_loss(self.loss, logits.float(), y) / len(y)

    def batch(self, split: str = "train", size: int | None = None, seed: int = 0,
              classes: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed, seeded random batch of the split (of some classes only), as the model sees it."""
        dataset = self.splits[split]
        pool = torch.arange(len(dataset))
        if classes is not None:
            pool = torch.isin(introspect.labels_of(dataset), torch.tensor(classes)).nonzero().flatten()
        size = min(size or self.cfg.checks.batch_size, len(pool))
        indices = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:size]].tolist()
        xs, ys = zip(*(dataset[i] for i in indices), strict=True)
        return torch.stack(xs).to(self.device), torch.as_tensor([int(y) for y in ys]).to(self.device)


def setup_for(cfg, device: torch.device) -> Setup:
    """The Setup of a composed config: its splits and its model, as training would build them."""
    splits, _ = datasets.build_screened_splits(cfg.dataset, refuse_bad=False)  # the outliers check names them
    counts = counts_of(introspect.labels_of(splits["train"]), cfg.dataset.num_classes)

    def make_model(init_output_bias: str | None = None) -> nn.Module:
        model_cfg = copy.deepcopy(cfg.model)
        if init_output_bias is not None:
            model_cfg.init_output_bias = init_output_bias
        return models.build(model_cfg, class_counts=counts)

    return Setup(cfg, splits, make_model, device)


def fresh(setup: Setup, seed_offset: int = 0, **kwargs) -> nn.Module:
    """A new model on the setup's device, seeded by trainer.seed: every check starts from the same weights
    (a second seed, seed_offset=1, measures how much a figure owes to the initialisation)."""
    torch.manual_seed(setup.cfg.trainer.seed + seed_offset)
    return setup.make_model(**kwargs).to(setup.device)


def class_counts(setup: Setup, split: str = "train") -> torch.Tensor:
    return counts_of(introspect.labels_of(setup.splits[split]), setup.num_classes)


def counts_of(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Samples per class 0..; negative labels (a signed cast wrapped them) are left out, for `splits` to name."""
    labels = labels.long()
    return torch.bincount(labels[labels >= 0], minlength=num_classes)


def fmt(values) -> str:
    """Per-channel figures for a table cell: [0.50, 0.11, 0.37]."""
    return "[" + ", ".join(f"{float(v):.2f}" for v in values) + "]"
