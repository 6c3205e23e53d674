"""python -m runner.lr_find +experiment=flowers [lr_find.steps=200 lr_find.method=valley]

The learning-rate range test: raise the learning rate exponentially from lr_find.start_lr,
one update per learning batch (trainer.batch_size, accumulated over micro-batches with the
configured loss, as training updates), until the loss diverges; restore the weights; write
lr_find.png (loss against learning rate, log scale, suggestion marked) and lr_find.csv, and
print the suggestion as a ready override (optimizer.lr=...). The suggestion reads a centred
(lag-free) smoothing of the loss by one of fastai's rules: steepest (default), valley, minimum.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from functools import partial
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from runner.checks.setup import Setup, fresh, setup_for
from runner.checks.training import Stepper
from runner.common.io import write_atomic, write_csv_atomic
from runner.data import loaders

log = logging.getLogger("runner.lr_find")


def epochs_of(loader, sampler):
    """The loader's batches without end, reshuffled each epoch as training does."""
    epoch = 0
    while True:
        yield from loader
        epoch += 1
        sampler.set_epoch(epoch)


class Divergence:
    """When the range test has gone past its useful range, read online as the test runs: fastai's rule, a
    debiased exponential average of the loss above diverge_factor x its lowest (for a positive loss), or the
    loss back where the test started after it had fallen by a tenth: the last five losses all within a tenth
    of the fall from the start (a loss that rises to a plateau, such as ln C once the weights are wrecked,
    never reaches 4x its lowest, and the lagging average approaches the plateau without reaching it)."""

    def __init__(self, smoothing: float, factor: float):
        self.smoothing, self.factor = smoothing, factor
        self.average, self.best = 0.0, math.inf
        self.losses: list[float] = []

    def diverged(self, value: float) -> bool:
        self.losses.append(value)
        self.average = (1 - self.smoothing) * self.average + self.smoothing * value
        debiased = self.average / (1 - (1 - self.smoothing) ** len(self.losses))  # the average starts at 0
        self.best = min(self.best, debiased)
        start = sum(self.losses[:5]) / len(self.losses[:5])  # at rates too small to change anything yet
        fall = start - self.best
        back = len(self.losses) > 5 and fall >= 0.1 * abs(start) and min(self.losses[-5:]) >= start - 0.1 * fall
        return back or (self.best > 0 and debiased > self.factor * self.best)


def range_test(setup: Setup, settings: DictConfig) -> dict:
    """(learning rates, raw losses, centred smoothing of the losses) of the test, each update made as training
    makes it (train_step: its precision, memory format, micro-batches); the weights are restored after."""
    model = fresh(setup).train()
    initial = copy.deepcopy(model.state_dict())
    step = Stepper(setup, model, settings.start_lr)
    optimizer = step.optimizer
    growth = (settings.end_lr / settings.start_lr) ** (1 / max(settings.steps - 1, 1))
    trainer = setup.cfg.trainer
    loader, sampler = loaders.train_loader(setup.splits["train"], trainer.batch_size, trainer.seed, 0, pin_memory=False,
                                           device=setup.device)
    lrs, losses = [], []
    watch = Divergence(settings.smoothing, settings.diverge_factor)
    # each group's share of the lr (optimizer.layer_decay, finetune.lr_mult): raised together, as the schedule does
    shares = [group["lr"] / settings.start_lr for group in optimizer.param_groups]
    for index, (x, y) in enumerate(itertools.islice(epochs_of(loader, sampler), settings.steps)):
        lr = settings.start_lr * growth**index
        for group, share in zip(optimizer.param_groups, shares, strict=True):
            group["lr"] = lr * share
        value = step(loaders.on_device(x, setup.device), y.to(setup.device))
        if not math.isfinite(value):
            break
        lrs.append(lr), losses.append(value)
        if watch.diverged(value):
            break
    model.load_state_dict(initial)  # the test changed the weights: put them back
    return {"lr": lrs, "loss": losses, "smoothed": centred(losses)}


def centred(losses: list[float]) -> list[float]:
    """A moving average centred on each step: no lag (an exponential average trails the raw loss and
    moves every rule's suggestion to larger learning rates); shorter windows at the ends."""
    half = max(2, len(losses) // 40)
    values = np.array(losses, dtype=float)
    return [float(values[max(0, i - half): i + half + 1].mean()) for i in range(len(values))]


def suggest(curve: dict, method: str) -> float:
    """fastai's rules on the centred loss. valley: two thirds down the longest stretch over which the
    loss keeps falling; minimum: the lowest loss's learning rate / 10; steepest: where the loss falls
    fastest per log learning rate before its minimum."""
    lrs, smoothed = np.array(curve["lr"]), np.array(curve["smoothed"])
    lowest = int(smoothed.argmin())
    if method == "minimum" or lowest < 3:
        return float(lrs[lowest] / 10)
    if method == "valley":
        return float(lrs[valley(smoothed)])
    slopes = np.gradient(smoothed[: lowest + 1], np.log(lrs[: lowest + 1]))
    return float(lrs[int(slopes.argmin())])


def valley(losses: np.ndarray) -> int:
    """fastai's valley: the longest decreasing subsequence of the loss, and the step two thirds into it."""
    n = len(losses)
    longest = [1] * n
    start, end = 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
        if longest[i] > longest[end]:
            end, start = i, i - longest[i]
    third = (end - start) / 3
    return min(n - 1, max(0, start + int(third) + int(third / 2)))


def plot(curve: dict, suggestion: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.plot(curve["lr"], curve["loss"], color="0.75", linewidth=0.8, label="loss")
    axes.plot(curve["lr"], curve["smoothed"], color="C0", label="smoothed loss (centred)")
    axes.axvline(suggestion, color="C3", linestyle="--", label=f"suggestion {suggestion:.2e}")
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss")
    top = min(max(curve["smoothed"]), 3 * curve["smoothed"][0])
    axes.set_ylim(min(min(curve["loss"]), min(curve["smoothed"])) * 0.9, top * 1.05)
    axes.legend()
    axes.set_title("learning-rate range test")
    figure.tight_layout()
    write_atomic(path, partial(figure.savefig, format="png", dpi=100))
    plt.close(figure)


def lr_find(cfg: DictConfig, run_dir: Path) -> int:
    from runner.common.runtime import pick_device

    setup = setup_for(cfg, pick_device(str(cfg.trainer.device), key="trainer.device"))
    curve = range_test(setup, cfg.lr_find)
    suggestion = suggest(curve, cfg.lr_find.method)
    write_csv_atomic(run_dir / "lr_find.csv", ["lr", "loss", "smoothed_loss"],
                     list(zip(curve["lr"], curve["loss"], curve["smoothed"], strict=True)))
    plot(curve, suggestion, run_dir / "lr_find.png")
    log.info("%d steps from lr %.1e to %.1e; smoothed loss %.3f at start, %.3f at its minimum",
             len(curve["lr"]), curve["lr"][0], curve["lr"][-1], curve["smoothed"][0], min(curve["smoothed"]))
    print(f"plot: {run_dir / 'lr_find.png'}\nsuggested ({cfg.lr_find.method}): optimizer.lr={suggestion:.2e}")
    return 0
