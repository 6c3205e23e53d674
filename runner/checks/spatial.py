"""The check that a model keeps each image's pixels in place: `python -m runner.check checks=[spatial_dependencies]`.

The practice's "use backprop to chart dependencies", within one sample: the gradient of one
position of the first spatial layer's output (the first Conv2d the forward pass runs) must
reach a window of input pixels, the same window in every input channel. A `view` or `reshape`
where a `permute` was meant (channels-last to channels-first by view, height and width
swapped by view) keeps every sample apart, so batch_independence passes, and the model still
learns something, so the training checks pass; only the dependencies show it: the position
then reads pixels scattered over the image, from some channels and not others. The dummy
batch has prime sides (13 x 17), so no reshape between equal sizes can hide; a model that
takes only the dataset's own size is charted at that size.
"""

from __future__ import annotations

import torch
from torch import nn

from runner.checks.setup import Result, Setup, fresh

EXPECTED = "one window of pixels, the same in every channel"
PRIME_SIDES = (13, 17)
SAMPLES = 16  # the union over samples: a ReLU or max-pool before the layer zeroes some pixels of each one


class FirstSpatialOutput(Exception):
    """Raised by the hook on the first Conv2d: its output is all the check needs (later layers may not
    take a dummy size)."""

    def __init__(self, output: torch.Tensor, layer: str):
        super().__init__(layer)
        self.output, self.layer = output, layer


def first_spatial_output(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, str] | None:
    """The output of the first Conv2d the forward pass of x runs, and its name; None when none runs."""
    names = {module: name for name, module in model.named_modules()}

    def stop(module, inputs, output):
        raise FirstSpatialOutput(output, f"Conv2d '{names[module]}'")

    handles = [m.register_forward_hook(stop) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        model(x)
    except FirstSpatialOutput as reached:
        return reached.output, reached.layer
    finally:
        for handle in handles:
            handle.remove()
    return None


def charted_input(setup: Setup, model: nn.Module) -> tuple[torch.Tensor, tuple[torch.Tensor, str] | None]:
    """A random batch of prime sides, or of the dataset's size where the model does not take those,
    and the first spatial layer's output on it."""
    x, _ = setup.batch(size=SAMPLES)
    channels = x.shape[1]
    generator = torch.Generator().manual_seed(0)
    dummy = torch.randn(len(x), channels, *PRIME_SIDES, generator=generator).to(x.device)
    try:
        return dummy, first_spatial_output(model, dummy.requires_grad_(True))
    except Exception:  # noqa: BLE001 (the model's code before its first conv needs the dataset's size: chart that)
        dummy = torch.randn(x.shape, generator=generator).to(x.device).requires_grad_(True)
        return dummy, first_spatial_output(model, dummy)


def reached_pixels(output: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
    """(channels, height, width): which pixels of its own sample the centre position of each sample's output
    reaches, over the samples (a leak into other samples is batch_independence's finding, not counted here);
    a random projection of the output's channels, so that a grouped conv reaches every input channel.
    None when no gradient reaches the input."""
    if not output.requires_grad:
        return None
    height, width = output.shape[-2:]
    direction = torch.randn(output.shape[1], generator=torch.Generator().manual_seed(1)).to(output.device)
    reached = torch.zeros(x.shape[1:], dtype=torch.bool, device=x.device)
    for sample in range(len(x)):
        (gradient,) = torch.autograd.grad((output[sample, :, height // 2, width // 2].float() * direction).sum(), x,
                                          retain_graph=True, allow_unused=True)
        if gradient is None:
            return None
        reached |= gradient[sample] != 0
    return reached if reached.any() else None


def evenly_spaced(indices: torch.Tensor) -> bool:
    steps = indices.diff()
    return len(steps) == 0 or bool((steps == steps[0]).all())


def window_problem(reached: torch.Tensor) -> str | None:
    """What is wrong with the reached pixels, or None when they form one window (rows x columns, evenly
    spaced, as a strided or dilated conv reads them) that every channel shares."""
    union = reached.any(dim=0)
    missing = [c for c in range(len(reached)) if not torch.equal(reached[c], union)]
    if missing:
        return f"input channels {missing} are reached at other pixels than the rest, or not at all"
    rows, columns = union.any(dim=1).nonzero().flatten(), union.any(dim=0).nonzero().flatten()
    if not torch.equal(union, union.any(dim=1)[:, None] & union.any(dim=0)[None, :]) \
            or not evenly_spaced(rows) or not evenly_spaced(columns):
        return "the pixels are scattered, not one window"
    return None


def describe(reached: torch.Tensor) -> str:
    """Where the reached pixels lie: rows and columns spanned and how many, for every channel at once
    where they agree, else per channel."""

    def place(mask: torch.Tensor) -> str:
        if not mask.any():
            return "none"
        rows, columns = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
        return (f"{int(mask.sum())} pixels in rows {int(rows[0])}-{int(rows[-1])}, "
                f"columns {int(columns[0])}-{int(columns[-1])}")

    if all(torch.equal(mask, reached[0]) for mask in reached):
        return f"in every channel {place(reached[0])}"
    parts = [f"channel {c}: {place(mask)}" for c, mask in enumerate(reached)]
    return "; ".join(parts[:4]) + ("; ..." if len(parts) > 4 else "")


def check_spatial_dependencies(setup: Setup) -> Result:
    """One position of the first spatial layer's output depends on one window of input pixels in every channel."""
    model = fresh(setup)
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return Result("spatial_dependencies", "no spatial layer (no Conv2d)", EXPECTED, "PASS")
    model.eval()  # dropout would punch holes into the window; BatchNorm's running statistics keep samples apart
    x, reached_output = charted_input(setup, model)
    if reached_output is None:
        return Result("spatial_dependencies", "no spatial layer runs in the forward pass", EXPECTED, "PASS")
    output, layer = reached_output
    reached = reached_pixels(output, x)
    if reached is None:
        return Result("spatial_dependencies", f"{layer}'s output does not depend on the input", EXPECTED, "WARN",
                      f"{layer} is the first Conv2d the forward pass runs, but the input does not reach it: check "
                      "that the forward pass feeds x to it")
    size = "x".join(str(s) for s in x.shape[1:])
    figure = f"the output of {layer} at its centre reads, of a {size} input, {describe(reached)}"
    problem = window_problem(reached)
    details = {"layer": layer, "input": list(x.shape[1:]), "pixels_per_channel": reached.sum(dim=(1, 2)).tolist()}
    if problem is None:
        return Result("spatial_dependencies", figure, EXPECTED, "PASS", details=details)
    return Result("spatial_dependencies", figure, EXPECTED, "FAIL",
                  f"the first spatial layer's output at one position depends on input pixels scattered over the "
                  f"image ({problem}): a reshape/view mixes dimensions before {layer} (use permute, not view, to "
                  "move channels; transpose, not view, to swap height and width)", details)
