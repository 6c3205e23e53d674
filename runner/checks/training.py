"""The checks that train for a few steps: `python -m runner.check checks=[overfit_batch,input_independent]`.

overfit_batch: a handful of samples must be learned by heart; input_independent: the same
short training on zeroed inputs must do clearly worse. `train_step` is their one training
step, and that of the learning-rate range test (lr_find.py).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from runner.checks import diagnose
from runner.checks.setup import Result, Setup, class_counts, fresh
from runner.training.losses import Loss, cross_entropy
from runner.training.optim import build_optimizer
from runner.training.step import micro_batch_loss


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               loss: Loss = cross_entropy, micro_batch_size: int | None = None) -> float:
    """One update on the learning batch (x, y) as the loop makes it: forward in train mode in
    micro-batches, the loss (training's own, runner/training/step.py), gradients accumulated,
    one optimizer step. Returns the batch's loss before the update."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for xs, ys in zip(x.split(micro_batch_size or len(y)), y.split(micro_batch_size or len(y)), strict=True):
        part, _, _ = micro_batch_loss(model, xs, ys, window_size=len(y), loss=loss, amp_dtype=None)
        part.backward()
        total += float(part.detach())
    optimizer.step()
    return total


def train_steps(setup: Setup, model: nn.Module, batches, steps: int, lr: float | None = None) -> list[float]:
    """`steps` updates of the configured optimizer over the batches (cycled), with the configured loss
    at the training's micro-batch size; the loss of each."""
    optimizer_cfg = copy.deepcopy(setup.cfg.optimizer)
    if lr is not None:
        optimizer_cfg.lr = lr
    optimizer = build_optimizer(optimizer_cfg, model)
    micro = setup.cfg.trainer.micro_batch_size
    return [train_step(model, optimizer, *batches[step % len(batches)], loss=setup.loss, micro_batch_size=micro)
            for step in range(steps)]


def loss_floor(setup: Setup, y: torch.Tensor) -> float:
    """The lowest configured loss any outputs can reach on labels y (0 for cross-entropy; above 0 with
    label smoothing or a user's loss), found by fitting free logits: what "learned by heart" reaches."""
    logits = torch.zeros(len(y), setup.num_classes, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=0.5)
    for _ in range(300):
        optimizer.zero_grad()
        value = setup.mean_loss(logits, y.cpu())
        value.backward()
        optimizer.step()
    return float(value.detach())


def check_overfit_batch(setup: Setup) -> Result:
    """A handful of samples must reach the loss's floor and 100% accuracy within the step budget; a fit
    still on its way down at the end (all samples right, loss falling) gets a second budget, so a
    verdict is never decided by where a healthy run happened to be at step N."""
    settings = setup.cfg.checks
    x, y = setup.batch(size=settings.overfit_samples)
    model = fresh(setup)
    floor = loss_floor(setup, y)
    losses = []
    for _ in range(2):
        losses += train_steps(setup, model, [(x, y)], settings.overfit_steps, settings.overfit_lr)
        model.eval()
        with torch.no_grad():
            logits = model(x)
            final = float(setup.mean_loss(logits, y))
            accuracy = float((logits.argmax(1) == y).float().mean())
        recent = losses[-max(2, settings.overfit_steps // 10):]
        if final < floor + 0.05 or accuracy < 1.0 or not recent[-1] < 0.9 * recent[0]:  # done, or not just slow
            break
    figure = f"loss {losses[0]:.3f} -> {final:.4f}, accuracy {100 * accuracy:.0f}% after {len(losses)} steps"
    expected = f"loss < {floor + 0.05:.2f} (the loss's floor {floor:.2f} + 0.05), accuracy 100%"
    details = {"losses": losses[:: max(1, len(losses) // 50)], "final_loss": final, "accuracy": accuracy,
               "floor": floor}
    if final < floor + 0.05 and accuracy == 1.0:
        return Result("overfit_batch", figure, expected, "PASS", details=details)
    verdict = "WARN" if accuracy == 1.0 and final < floor + 0.5 else "FAIL"  # slow, or stuck far above the floor
    return Result("overfit_batch", figure, expected, verdict,
                  diagnose.why_it_does_not_fit(setup, model, x, y, final, accuracy, floor), details)


def check_input_independent(setup: Setup) -> Result:
    """The same short training with zeroed inputs must do clearly worse on validation than with real ones.

    Both train on the checks.baseline_classes most frequent classes only.
    """
    settings = setup.cfg.checks
    # on a few classes the signal shows within a short budget, also for a 102-class problem
    classes = class_counts(setup).argsort(descending=True)[: settings.baseline_classes].tolist()
    batches = [setup.batch(size=settings.baseline_batch_size, seed=seed, classes=classes) for seed in range(8)]
    val_x, val_y = setup.batch("val", size=512, classes=classes)
    figures, models = {}, {}
    for name, transform in (("real", lambda x: x), ("zeroed", torch.zeros_like)):
        model = models[name] = fresh(setup)
        losses = train_steps(setup, model, [(transform(x), y) for x, y in batches], settings.baseline_steps)
        model.eval()
        with torch.no_grad():
            logits = model(transform(val_x)).detach()
        figures[name] = {"loss": float(setup.mean_loss(logits, val_y)), "train_loss": sum(losses[-8:]) / len(losses[-8:]),
                         "accuracy": float((logits.argmax(1) == val_y).float().mean())}
    real, zeroed = figures["real"], figures["zeroed"]
    # a short training may not lower the loss yet on many classes, but real inputs must already
    # lift accuracy beyond what chance would explain (one-sided two-proportion z-test, p < 0.001)
    p_value = accuracy_p_value(real["accuracy"], zeroed["accuracy"], len(val_y))
    figures["accuracy_p_value"] = p_value
    figure = (f"validation loss {real['loss']:.3f} / accuracy {100 * real['accuracy']:.1f}% with inputs, "
              f"{zeroed['loss']:.3f} / {100 * zeroed['accuracy']:.1f}% with zeroed inputs")
    expected = "clearly better with inputs"
    if real["loss"] < 0.9 * zeroed["loss"] or p_value < 1e-3:
        return Result("input_independent", figure, expected, "PASS", details=figures)
    return Result("input_independent", figure, expected, "FAIL",
                  diagnose.why_inputs_do_not_help(models["real"], val_x, real["train_loss"], zeroed["train_loss"]),
                  figures)


def accuracy_p_value(better: float, baseline: float, n: int) -> float:
    """One-sided p-value that accuracy `better` exceeds `baseline` by chance, both measured on n samples."""
    pooled = (better + baseline) / 2
    spread = math.sqrt(max(2 * pooled * (1 - pooled) / n, 1e-12))
    return 0.5 * math.erfc((better - baseline) / spread / math.sqrt(2))
