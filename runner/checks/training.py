"""The checks that train for a few steps: `python -m runner.check checks=[overfit_batch,input_independent]`.

overfit_batch: a handful of samples must be learned by heart; input_independent: the same
short training on zeroed inputs must do clearly worse. Both learn the training split without
augmentation (data/clean_views.py), and say so. `train_step` is their one training
step, and that of the learning-rate range test (lr_find.py).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from runner.checks import diagnose, evidence
from runner.checks.setup import Result, Setup, class_counts, fresh
from runner.common.runtime import autocast_dtype
from runner.data.clean_views import unaugmented
from runner.evaluation.paired import two_proportion_p_value
from runner.training.losses import Loss, cross_entropy
from runner.training.optim import build_optimizer
from runner.training.step import images_to_device, micro_batch_loss, trainable


@dataclass(frozen=True)
class StepView:
    """How the training loop runs a step (runner/training/loop.py's train_step): the autocast dtype its
    trainer.precision gives on this device, the memory format of its images and weights, its micro-batch
    size and its gradient clipping."""

    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    micro_batch_size: int | None = None
    grad_clip_norm: float | None = None


def step_view(setup: Setup) -> StepView:
    trainer = setup.cfg.trainer
    return StepView(autocast_dtype(trainer.precision, setup.device, key="trainer.precision"),
                    bool(trainer.channels_last), trainer.micro_batch_size, trainer.grad_clip_norm)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               loss: Loss = cross_entropy, view: StepView = StepView(), scaler: torch.amp.GradScaler | None = None
               ) -> float:
    """One update on the learning batch (x, y) as the loop makes it: forward in train mode in micro-batches
    under the training's precision and memory format, the loss (training's own, runner/training/step.py),
    gradients accumulated (scaled under fp16), unscaled and clipped, one optimizer step. Returns the batch's
    loss before the update."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    scaler = scaler or torch.amp.GradScaler(x.device.type, enabled=False)
    size = view.micro_batch_size or len(y)
    x = images_to_device(x, x.device, view.channels_last)
    total = 0.0
    for xs, ys in zip(x.split(size), y.split(size), strict=True):
        part, _, _ = micro_batch_loss(model, xs, ys, window_size=len(y), loss=loss, amp_dtype=view.amp_dtype)
        scaler.scale(part).backward()
        total += float(part.detach())
    if view.grad_clip_norm is not None:
        scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
        nn.utils.clip_grad_norm_(trainable(model), float(view.grad_clip_norm))
    scaler.step(optimizer)  # under fp16 skips an update whose gradients overflowed, as the loop does
    scaler.update()
    return total


class Stepper:
    """Training updates one at a time with the configured optimizer (its state kept between calls), loss,
    precision and memory format: stepper(x, y) -> the batch's loss before the update."""

    def __init__(self, setup: Setup, model: nn.Module, lr: float | None = None):
        optimizer_cfg = copy.deepcopy(setup.cfg.optimizer)
        if lr is not None:
            optimizer_cfg.lr = lr
        self.view, self.model, self.loss = step_view(setup), model, setup.loss
        if self.view.channels_last:
            model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(optimizer_cfg, model)
        self.scaler = torch.amp.GradScaler(setup.device.type, enabled=self.view.amp_dtype == torch.float16)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return train_step(self.model, self.optimizer, x, y, loss=self.loss, view=self.view, scaler=self.scaler)


def train_steps(setup: Setup, model: nn.Module, batches, steps: int, lr: float | None = None) -> list[float]:
    """`steps` updates of the configured optimizer over the batches (cycled), as training makes them; the loss of each."""
    step = Stepper(setup, model, lr)
    return [step(*batches[i % len(batches)]) for i in range(steps)]


def loss_floor(setup: Setup, y: torch.Tensor) -> float:
    """The lowest configured loss any outputs can reach on labels y (0 for cross-entropy; above 0 with label
    smoothing or a user's loss; -inf for a loss unbounded below, such as a negated one), found by fitting free
    logits. The search starts from logits that favour each target, where a clipped loss still has a gradient
    (from uniform logits a loss clamped at 1.0 has none, and its floor read as 1.00)."""
    y = y.cpu()
    logits = (3.0 * nn.functional.one_hot(y, setup.num_classes).float()).requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=0.5)
    lowest = math.inf
    for _ in range(300):
        optimizer.zero_grad()
        value = setup.mean_loss(logits, y)
        value.backward()
        optimizer.step()
        lowest = min(lowest, float(value.detach()))
    with torch.no_grad():
        reached, doubled = float(setup.mean_loss(logits, y)), float(setup.mean_loss(2 * logits, y))
    if doubled < reached - 1.0 - 0.5 * abs(reached):  # still falling fast as the logits grow: no floor
        return -math.inf
    return min(lowest, reached)


def fit_budget(setup: Setup, step: Stepper, x: torch.Tensor, y: torch.Tensor, steps: int,
               points: list[evidence.FitPoint]) -> list[float]:
    """`steps` more updates on (x, y); the fit measured in eval mode every tenth of them (appended to points).
    Returns the training losses."""
    every, start, losses = max(1, steps // 10), points[-1].step, []
    for done in range(1, steps + 1):
        losses.append(step(x, y))
        if done % every == 0 or done == steps:
            points.append(evidence.measure_fit(setup, step.model, x, y, start + done))
    return losses


WITHOUT = "(without augmentation)"


def without_augmentation(setup: Setup) -> Setup:
    """The setup with its training split as the evaluator makes a split: these checks judge the model and the
    loss on what the data is, not on how hard the augmentation makes it (mixup/cutmix never reach train_step)."""
    return dataclasses.replace(setup, splits={**setup.splits, "train": unaugmented(setup.splits["train"])})


def check_overfit_batch(setup: Setup) -> Result:
    """A handful of samples must reach the loss's floor and 100% accuracy within the step budget; a fit
    still falling steadily at the end gets a second budget, so a verdict is never decided by where a healthy
    run happened to be at step N. A failed fit is diagnosed from its evidence (diagnose.py)."""
    settings, setup = setup.cfg.checks, without_augmentation(setup)
    x, y = setup.batch(size=settings.overfit_samples)
    model = fresh(setup)
    floor = loss_floor(setup, y)
    step = Stepper(setup, model, settings.overfit_lr)
    points = [evidence.measure_fit(setup, model, x, y, 0)]
    losses: list[float] = []
    for _ in range(2):
        losses += fit_budget(setup, step, x, y, settings.overfit_steps, points)
        if fitted(points[-1], floor) or not evidence.still_falling(points, floor):
            break
    final = points[-1]
    figure = (f"loss {losses[0]:.3f} -> {final.loss:.4f}, accuracy {100 * final.accuracy:.0f}% "
              f"after {len(losses)} steps {WITHOUT}")
    expected = (f"loss < {floor + 0.05:.2f} (the loss's floor {floor:.2f} + 0.05), accuracy 100%" if math.isfinite(floor)
                else "a loss with a floor (this one falls without bound), accuracy 100%")
    details = {"losses": losses[:: max(1, len(losses) // 50)], "final_loss": final.loss, "accuracy": final.accuracy,
               "floor": floor, "fit": [vars(point) for point in points]}
    if fitted(final, floor):
        return Result("overfit_batch", figure, expected, "PASS", details=details)
    verdict, fix = diagnose.why_it_does_not_fit(diagnose.Fit(setup, model, x, y, points, floor))
    return Result("overfit_batch", figure, expected, verdict, fix, details)


def fitted(point: evidence.FitPoint, floor: float) -> bool:
    return point.loss < floor + 0.05 and point.accuracy == 1.0


class ShortTraining:
    """input_independent's training of a fresh model on the batches, with the inputs as they are or zeroed."""

    def __init__(self, setup: Setup, batches, transform):
        self.setup, self.transform, self.batches = setup, transform, batches
        self.model = fresh(setup)
        self.step, self.losses = Stepper(setup, self.model), []

    def train(self, steps: int) -> None:
        done = len(self.losses)
        self.losses += [self.step(self.transform(x), y) for x, y in
                        (self.batches[i % len(self.batches)] for i in range(done, done + steps))]

    def measure(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        self.model.eval()
        with torch.no_grad():
            logits = self.model(self.transform(x)).float()
        return {"loss": float(self.setup.mean_loss(logits, y)), "train_loss": sum(self.losses[-8:]) / len(self.losses[-8:]),
                "accuracy": float((logits.argmax(1) == y).float().mean())}


ROUNDS = 4  # input_independent: up to 4 x checks.baseline_steps, for slow learners


def check_input_independent(setup: Setup) -> Result:
    """The same short training with zeroed inputs must do clearly worse on validation than with real ones,
    judged on accuracy and on the loss's distance to its floor (so for a negative, clipped or bounded loss
    too); an undecided comparison trains both further, up to ROUNDS x checks.baseline_steps.

    Both train on the checks.baseline_classes most frequent classes only.
    """
    settings, setup = setup.cfg.checks, without_augmentation(setup)
    # on a few classes the signal shows within a short budget, also for a 102-class problem
    classes = class_counts(setup).argsort(descending=True)[: settings.baseline_classes].tolist()
    batches = [setup.batch(size=settings.baseline_batch_size, seed=seed, classes=classes) for seed in range(8)]
    val_x, val_y = setup.batch("val", size=512, classes=classes)
    floor = loss_floor(setup, val_y)
    runs = {"real": ShortTraining(setup, batches, lambda x: x), "zeroed": ShortTraining(setup, batches, torch.zeros_like)}
    for _ in range(ROUNDS):
        for run in runs.values():
            run.train(settings.baseline_steps)
        figures = {name: run.measure(val_x, val_y) for name, run in runs.items()}
        verdict = inputs_verdict(figures["real"], figures["zeroed"], floor, len(val_y))
        if verdict is not None:
            break
    real, zeroed = figures["real"], figures["zeroed"]
    figures.update(floor=floor, steps=len(runs["real"].losses))
    figure = (f"validation loss {real['loss']:.3f} / accuracy {100 * real['accuracy']:.1f}% with inputs, "
              f"{zeroed['loss']:.3f} / {100 * zeroed['accuracy']:.1f}% with zeroed inputs "
              f"after {len(runs['real'].losses)} steps {WITHOUT}")
    if verdict == "PASS":
        return Result("input_independent", figure, "clearly better with inputs", "PASS", details=figures)
    trained = diagnose.Trained(setup, runs["real"].model, val_x, val_y)
    return Result("input_independent", figure, "clearly better with inputs", "FAIL",
                  diagnose.why_inputs_do_not_help(trained, real["train_loss"], zeroed["train_loss"]), figures)


def inputs_verdict(real: dict, zeroed: dict, floor: float, n: int) -> str | None:
    """PASS when real inputs lift accuracy beyond what chance explains (one-sided two-proportion z-test,
    p < 0.001), or take a tenth off the zeroed model's distance to the loss's floor without lowering
    accuracy; FAIL when they lower accuracy as clearly (a loss that rewards wrong answers); None: undecided.
    A loss without a floor is judged on accuracy alone."""
    if two_proportion_p_value(real["accuracy"], zeroed["accuracy"], n, n) < 1e-3:
        return "PASS"
    if two_proportion_p_value(zeroed["accuracy"], real["accuracy"], n, n) < 1e-3:
        return "FAIL"
    room = zeroed["loss"] - floor
    if math.isfinite(floor) and room > 0 and zeroed["loss"] - real["loss"] > 0.1 * room \
            and real["accuracy"] >= zeroed["accuracy"]:
        return "PASS"
    return None


