"""Why a model does not learn, named from what can be measured: the fix of `overfit_batch` and
`input_independent` in `python -m runner.check`. Each rule looks at the trained model's outputs and
gradients on the batch and names one cause, most specific first; the last is the plain "too slow".
"""

from __future__ import annotations

import math

import torch
from torch import nn


def why_it_does_not_fit(setup, model: nn.Module, x: torch.Tensor, y: torch.Tensor, final: float, accuracy: float,
                        floor: float) -> str:
    """The cause of a failed overfit_batch: probabilities for logits, outputs equal for every sample,
    gradients stopped inside, capped logits, a plateau at ln C, or too few steps."""
    model.eval()
    with torch.no_grad():
        logits = model(x).float()
    rows = logits.sum(dim=1)
    if (logits >= 0).all() and (logits <= 1).all() and torch.allclose(rows, torch.ones_like(rows), atol=1e-3):
        return ("the model outputs probabilities (every row sums to 1), and the loss wants raw logits. "
                "Fix: remove the softmax at the end of the model (the loss applies log-softmax itself)")
    if float(logits.std(dim=0).max()) < 1e-5 * (1 + float(logits.abs().max())):
        return ("the outputs do not vary across samples: every input gets the same answer, so only the class "
                "frequencies are learned. Causes: all weights start equal (a constant or symmetric initialisation), "
                "or the input never reaches the output. Fix: random initial weights (PyTorch's defaults), and a "
                "forward pass that uses x")
    stopped, learning = parameters_by_gradient(setup, model, x, y)
    if stopped and learning:
        return (f"gradients stop inside the model: {', '.join(stopped[:4])} get no gradient while the layers after "
                "them do. Cause: a step without a gradient between them and the output (round, argmax, a "
                "comparison, .detach(), a cast to an integer). Fix: a differentiable operation there")
    if accuracy == 1.0:
        return (f"accuracy 100% but the loss stays at {final:.3f}, above its floor {floor:.3f}: the logits are capped "
                f"(they span only {float(logits.max() - logits.min()):.2f}). Cause: a clamp, tanh, sigmoid or min on "
                "the output. Fix: return unbounded logits")
    chance = math.log(setup.num_classes)
    if abs(final - chance) < 0.05 * chance:
        return (f"the loss stays at ln({setup.num_classes}) = {chance:.3f}: the outputs carry nothing about the "
                "labels. Fix: check that the labels belong to the inputs and that the loss gets the model's logits")
    return (f"the loss falls, too slowly to fit {len(y)} samples in {setup.cfg.checks.overfit_steps} steps. "
            "Fix: a larger checks.overfit_lr (try 10x), more checks.overfit_steps, or a model with more capacity")


def parameters_by_gradient(setup, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[list[str], list[str]]:
    """(trainable parameters whose gradient on the batch is missing or zero, those that get one); in eval
    mode: the whole batch in one pass is not what training runs (BatchNorm on its micro-batch)."""
    model.eval()
    model.zero_grad(set_to_none=True)
    setup.mean_loss(model(x), y).backward()
    stopped, learning = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (learning if p.grad is not None and bool(p.grad.any()) else stopped).append(name)
    model.zero_grad(set_to_none=True)
    return stopped, learning


def ignores_its_input(model: nn.Module, x: torch.Tensor) -> bool:
    """Does the model give the same outputs whatever the input (real images against other real images)?"""
    model.eval()
    with torch.no_grad():
        return torch.allclose(model(x), model(x.roll(1, dims=0)), atol=1e-6)


def why_inputs_do_not_help(model: nn.Module, x: torch.Tensor, train_real: float, train_zeroed: float) -> str:
    """The cause of a failed input_independent: an output that ignores the input, labels that do not
    belong to the images, or a training too short to learn from them."""
    if ignores_its_input(model, x):
        return ("the model's output does not depend on its input (other images give the same outputs). "
                "Fix: a forward pass that reads x all the way to the output")
    if train_real < 0.9 * train_zeroed:
        return (f"the model learns the training samples from their inputs (training loss {train_real:.3f} against "
                f"{train_zeroed:.3f} with zeroed inputs) but that does not carry to validation: the training labels "
                "may not belong to their images (shuffled apart), or train and validation differ. Fix: check the "
                "label mapping of the training split (python -m runner.inspect_data shows images with their labels)")
    return (f"the short training learned nothing from the inputs (training loss {train_real:.3f} against "
            f"{train_zeroed:.3f} with zeroed inputs): the labels may not belong to the images, or the learning "
            "rate is too low for checks.baseline_steps updates. Fix: check the labels with python -m "
            "runner.inspect_data, then the learning rate with python -m runner.lr_find")
