"""What a failed fit leaves behind to read the cause from: `python -m runner.check checks=[overfit_batch,input_independent]`.

Each function measures one thing on the trained model, its batch or the configured loss (identical
units in a layer, tensors frozen at their initial values, samples the loss gives exactly no gradient,
the loss's direction against correct answers, the scale of the first layer's input, the logits'
span over the fit); diagnose.py's rules read them, most likely bug first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from runner.checks import loss_probe
from runner.checks.setup import Setup

WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class FitPoint:
    """The batch's loss, accuracy and logit span (max - min) in eval mode after `step` updates."""

    step: int
    loss: float
    accuracy: float
    span: float


def measure_fit(setup: Setup, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> FitPoint:
    model.eval()
    with torch.no_grad():
        logits = model(x).float()
    return FitPoint(step, float(setup.mean_loss(logits, y)), float((logits.argmax(1) == y).float().mean()),
                    float(logits.max() - logits.min()))


def quarter_back(points: list[FitPoint]) -> FitPoint:
    """The measurement a quarter of the fit's steps before its last."""
    return [p for p in points[:-1] if p.step <= 0.75 * points[-1].step][-1]


def gap_shrink(points: list[FitPoint], floor: float) -> float:
    """How much of the distance to the floor the last quarter of the fit removed (0: none, 1: all of it)."""
    if not math.isfinite(floor) or len(points) < 4:
        return 0.0
    before, after = quarter_back(points).loss - floor, points[-1].loss - floor
    return 0.0 if before <= 0 else 1 - max(after, 0.0) / before


def still_falling(points: list[FitPoint], floor: float) -> bool:
    """A fit on its way down: the loss fell from each of the last three measurements to the next (a steady
    fall, not noise), and its last quarter either removed a tenth of the distance to the floor (a fit closing
    in) or fell a tenth as much as the whole fit so far (a slow, even fall far above the floor). A capped or
    stalled fit does neither."""
    if len(points) < 4 or not math.isfinite(floor):
        return False
    last = [p.loss for p in points[-3:]]
    steady = all(b < a for a, b in zip(last, last[1:], strict=False))
    recent, overall = quarter_back(points).loss - points[-1].loss, points[0].loss - points[-1].loss
    return steady and (gap_shrink(points, floor) >= 0.1 or (overall > 0 and recent >= 0.1 * overall))


def steps_to_floor(points: list[FitPoint], floor: float, margin: float) -> int | None:
    """Updates the whole fit would need to come within `margin` of the floor, extrapolating the last quarter's
    rate (the distance to the floor shrinks by a constant factor per update: an overestimate for an even fall);
    None when it does not shrink."""
    shrink = gap_shrink(points, floor)
    if not 0 < shrink < 1:
        return None
    per_step = math.log(1 - shrink) / (points[-1].step - quarter_back(points).step)
    left = max(math.log(margin / (points[-1].loss - floor)) / per_step, 0.0)
    return points[-1].step + math.ceil(left)


def span_grows(points: list[FitPoint]) -> bool:
    """Whether the logits' span still widened by 5% over the second half of the fit (capped logits stop widening)."""
    middle = points[len(points) // 2]
    return points[-1].span > 1.05 * middle.span


def identical_units(model: nn.Module) -> tuple[str, str, int] | None:
    """The first layer (name, type, units) whose units are all identical (every output row of its weight, and its
    bias, the same): the symmetry a constant initialisation leaves, which training cannot break."""
    for name, layer in model.named_modules():
        if not isinstance(layer, WEIGHTED) or layer.weight.shape[0] < 2:
            continue
        rows = layer.weight.detach().flatten(1).float()
        if layer.bias is not None:
            rows = torch.cat([rows, layer.bias.detach().float()[:, None]], dim=1)
        if float((rows - rows[0]).abs().max()) <= 1e-6 * (1 + float(rows.abs().max())):
            return name, type(layer).__name__, rows.shape[0]
    return None


def zero_gradient_samples(setup: Setup, logits: torch.Tensor, y: torch.Tensor) -> tuple[int, list[float]]:
    """(samples still predicted wrong, the losses of those among them whose gradient with respect to their
    logits is exactly zero): a loss clipped at a value gives samples above it nothing to learn from."""
    values, gradients = loss_probe.values_and_gradients(setup.loss, logits.cpu(), y.cpu())
    wrong = logits.detach().cpu().argmax(1) != y.cpu()
    silent = wrong & (gradients == 0).all(dim=1)
    return int(wrong.sum()), [float(v) for v in values[silent]]


def rewards_wrong_answers(setup: Setup) -> str | None:
    """loss_probe's finding when the configured loss is lower for a confidently wrong answer than for the
    uniform one (its sign), else None."""
    return loss_probe.rewards_wrong_answers(loss_probe.probe(setup.loss, setup.num_classes))


def first_layer_input_scale(model: nn.Module, x: torch.Tensor) -> tuple[str, float] | None:
    """(the first weighted layer to run, the spread of its input over that of the data): a layer after an
    extra division (x / 255 on already standardized images) sees ~1/255 of the data's scale."""
    seen: list[tuple[str, float]] = []
    names = {layer: name for name, layer in model.named_modules()}

    def record(layer, inputs, _output):
        if not seen and inputs and isinstance(inputs[0], torch.Tensor):
            seen.append((names[layer], float(inputs[0].detach().float().std())))

    hooks = [layer.register_forward_hook(record) for layer in model.modules() if isinstance(layer, WEIGHTED)]
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    data_scale = float(x.float().std())
    if not seen or data_scale == 0:
        return None
    name, scale = seen[0]
    return name, scale / data_scale
