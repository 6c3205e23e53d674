"""The check that each sample's output comes from that sample alone: `python -m runner.check checks=[batch_independence]`.

batch_independence backpropagates a random projection of sample i's output to the inputs: the
gradient must reach input i and no other. A projection, not the plain sum of the outputs: a
model whose logits are centred, or whose output is a softmax, has a constant sum, so the sum's
gradient is exactly zero although the model is healthy. An output that does not depend on its
input at all is a finding of its own (the forward pass does not read x), not a mixing of samples.
"""

from __future__ import annotations

import torch

from runner import models
from runner.checks.setup import Result, Setup, fresh

EXPECTED = "only sample 1"


def input_gradient(setup: Setup, x: torch.Tensor) -> torch.Tensor | None:
    """The gradient, per input sample, of a random projection of sample 1's output; None when none reaches x."""
    model = fresh(setup)
    model.train(not models.has_batch_norm(model))  # BatchNorm mixes samples by design in train mode
    x = x.clone().requires_grad_(True)
    output = model(x)
    if not output.requires_grad:  # the output is not computed from anything trainable or from x
        return None
    direction = torch.randn(output[1].shape, generator=torch.Generator().manual_seed(0)).to(output.device)
    (output[1].float() * direction).sum().backward()
    return None if x.grad is None else x.grad.abs().flatten(1).sum(dim=1)


def check_batch_independence(setup: Setup) -> Result:
    """The gradient of sample 1's output reaches input 1 only (catches view-for-permute and batch mixing)."""
    x, _ = setup.batch(size=3)
    per_sample = input_gradient(setup, x)
    note = " (BatchNorm: checked in eval mode)" if models.has_batch_norm(fresh(setup)) else ""
    if per_sample is None or not per_sample.any():
        return Result("batch_independence", "no gradient of sample 1's output reaches any input" + note, EXPECTED,
                      "FAIL", "the output does not depend on its input: the forward pass does not read x, or cuts "
                      "it off (a detach, torch.no_grad, an argmax/round on the features, a constant output)")
    reached = [i for i in range(len(per_sample)) if per_sample[i] > 0]
    figure = f"gradient of sample 1's output reaches samples {reached}" + note
    if reached != [1]:
        return Result("batch_independence", figure, EXPECTED, "FAIL",
                      "the model mixes samples across the batch: look for a view/reshape where a permute/transpose "
                      "was meant, or a statistic taken over the batch dimension")
    return Result("batch_independence", figure, EXPECTED, "PASS")
