"""How the configured loss answers a prediction, whatever the model: `python -m runner.check checks=[loss_at_init,gradients_flow]`.

A loss must fall as the predicted probability of the target rises, and give a gradient to every
sample the model gets wrong. Two bugs break that silently and pass a loss-at-init comparison made
with the same loss: a wrong sign (it rewards wrong answers) and a clipped loss (`.clamp(max=3.0)`:
the samples above the clip give exactly zero gradient, so the outliers are ignored; the practice
clips the gradients instead). The probe feeds the loss synthetic logits whose target probability
goes from 1e-6 to 0.999, the other classes equal, for a few target classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from runner.training.losses import Loss

LOWEST, HIGHEST, POINTS, MOST_CLASSES = 1e-6, 0.999, 61, 10


@dataclass
class Probe:
    probabilities: torch.Tensor  # (P,) the target's predicted probability, rising
    losses: torch.Tensor  # (P, K) the loss of each probability, for K target classes
    zero_gradient: torch.Tensor  # (P, K) True where the loss gives the logits exactly zero gradient
    num_classes: int

    @property
    def chance(self) -> float:
        return 1.0 / self.num_classes


def values_and_gradients(loss: Loss, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's loss (N,) and its gradient with respect to its logits (N, C); a loss that returns
    the batch mean is called one sample at a time."""
    logits = logits.detach().float().requires_grad_()
    value = loss(logits, targets)
    if value.dim() == 0:
        value = torch.stack([loss(logits[i:i + 1], targets[i:i + 1]).reshape(()) for i in range(len(targets))])
    (gradient,) = torch.autograd.grad(value.sum(), logits, allow_unused=True)
    return value.detach(), torch.zeros_like(logits) if gradient is None else gradient


def target_logit(probability: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The target's logit that gives it this softmax probability when the other logits are 0."""
    return torch.log(probability * (num_classes - 1) / (1 - probability))


def probe(loss: Loss, num_classes: int, device: torch.device | str = "cpu") -> Probe:
    """The loss and its zero-gradient points over target probabilities from 1e-6 to 0.999, with the
    uniform prediction (1/C) among them; on the device the loss runs on in training."""
    ends = target_logit(torch.tensor([LOWEST, HIGHEST], dtype=torch.float64), num_classes)
    logit = torch.cat([torch.linspace(float(ends[0]), float(ends[1]), POINTS, dtype=torch.float64),
                       torch.zeros(1, dtype=torch.float64)]).sort().values
    classes = min(num_classes, MOST_CLASSES)
    logits = torch.zeros(len(logit), classes, num_classes, dtype=torch.float64)
    targets = torch.arange(classes).expand(len(logit), classes)
    logits[torch.arange(len(logit))[:, None], torch.arange(classes), targets] = logit[:, None]
    values, gradients = values_and_gradients(loss, logits.reshape(-1, num_classes).float().to(device),
                                             targets.reshape(-1).to(device))
    shape = (len(logit), classes)
    return Probe(logit.exp() / (logit.exp() + num_classes - 1), values.reshape(shape).double().cpu(),
                 (gradients == 0).all(dim=1).reshape(shape).cpu(), num_classes)


def shown(value: float) -> str:
    """A loss value as a reader writes it: 1.0, 3.0, 2.3026."""
    return str(round(value, 4))


def constant(values: torch.Tensor) -> bool:
    """One value, to float precision: the loss is flat there (a clip)."""
    return float(values.max() - values.min()) <= 1e-6 * (1 + float(values.abs().max()))


def rewards_wrong_answers(result: Probe) -> str | None:
    """The finding when the loss is lower for a confidently wrong answer than for the uniform one."""
    finite = torch.isfinite(result.losses).all(dim=1)
    wrong = result.losses[finite & (result.probabilities <= LOWEST * 1.01)]
    uniform = result.losses[finite & ((result.probabilities - result.chance).abs() < 1e-9)]
    if not len(wrong) or not len(uniform) or not (wrong[0] < uniform[0] - 1e-6 * (1 + uniform[0].abs())).any():
        return None
    return (f"the loss falls as the target's probability falls ({shown(float(wrong[0].mean()))} at 1e-06, "
            f"{shown(float(uniform[0].mean()))} at chance 1/{result.num_classes}): it rewards wrong answers (its sign). "
            "Fix: return the loss to minimise (cross-entropy is -log p of the target, not +log p)")


def ignored_below_chance(result: Probe) -> tuple[str, str] | None:
    """(verdict, finding) when samples predicted below chance get exactly zero gradient: FAIL when even
    the uniform prediction gets none (nothing learns from init), else WARN (the outliers are ignored)."""
    below = result.probabilities < result.chance * (1 + 1e-9)
    dead = result.zero_gradient & below[:, None]
    if not dead.any():
        return None
    from_the_bottom = result.zero_gradient.any(dim=1).int().cumprod(dim=0).bool()  # the region clipped
    highest = float(result.probabilities[from_the_bottom | dead.any(dim=1)].max())
    values = result.losses[dead]
    if constant(values):
        clip = (f"the loss is clipped at {shown(float(values.mean()))}, so samples with a loss above it (a target "
                f"probability of {highest:.2g} or less) are ignored")
    else:
        clip = f"samples with a target probability of {highest:.2g} or less are ignored"
    uniform_dead = bool(dead[(result.probabilities - result.chance).abs() < 1e-9].any())
    return ("FAIL" if uniform_dead else "WARN",
            f"a share of training samples give exactly zero gradient: {clip}. Fix: clip the gradients "
            "(trainer.grad_clip_norm=1.0), not the loss")


def no_gradient_on_batch(loss: Loss, logits: torch.Tensor, targets: torch.Tensor) -> str | None:
    """The finding when no sample of a real batch gets a gradient from the loss: the loss, not the
    model's parameters, stops learning."""
    values, gradients = values_and_gradients(loss, logits, targets)
    if gradients.any():
        return None
    if constant(values):
        value = shown(float(values.mean()))
        return (f"the loss is clipped at {value}: every sample of the batch is above it, and samples above {value} "
                "give no gradient. Fix: clip the gradients (trainer.grad_clip_norm=1.0), not the loss")
    return ("every sample's loss gives the logits no gradient: the loss does not depend on them differentiably "
            "(detached, argmax, a comparison). Fix: compute the loss from the logits with differentiable operations")


def cross_entropy_of_uniform(num_classes: int) -> float:
    """ln(C): the cross-entropy of uniform predictions, a sanity anchor independent of the loss's sign."""
    return math.log(num_classes)
