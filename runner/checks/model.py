"""The checks that look at the model before training: `python -m runner.check checks=[loss_at_init,gradients_flow]`.

loss_at_init and output_bias: the loss of the untrained model against what chance predicts;
gradients_flow: every trainable parameter learns; train_eval_mode: dropout/BatchNorm switch with the mode, eval repeats.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from runner.checks.setup import Result, Setup, class_counts, fresh
from runner.training.optim import build_optimizer


def loss_at_init(setup: Setup, init_output_bias: str = "none") -> float:
    """The loss of a fresh model (eval mode) on the checks' batch."""
    model = fresh(setup, init_output_bias=init_output_bias).eval()
    x, y = setup.batch()
    with torch.no_grad():
        return float(F.cross_entropy(model(x).float(), y))


def check_loss_at_init(setup: Setup) -> Result:
    """The initial loss against -ln(1/C) (or the prior's entropy when the bias starts at the prior)."""
    bias = setup.cfg.model.get("init_output_bias", "none")
    measured = loss_at_init(setup, bias)
    if bias == "prior":
        prior = class_counts(setup).float() / class_counts(setup).sum()
        expected_value, expected = float(-(prior[prior > 0] * prior[prior > 0].log()).sum()), "entropy of the class prior"
    else:
        expected_value, expected = math.log(setup.num_classes), f"-ln(1/{setup.num_classes})"
    figure = f"{measured:.3f}"
    expected = f"{expected} = {expected_value:.3f}"
    gap = abs(measured - expected_value) / expected_value
    fix = ("the logits at init are too large or biased: scale down the last layer's initial weights, "
           "check that the loss gets logits (not probabilities) and that labels match the outputs")
    if gap <= 0.25:
        return Result("loss_at_init", figure, expected, "PASS", details={"measured": measured, "expected": expected_value})
    return Result("loss_at_init", figure, expected, "WARN" if gap <= 1.0 else "FAIL", fix,
                  {"measured": measured, "expected": expected_value})


def check_output_bias(setup: Setup) -> Result:
    """model.init_output_bias=prior: how much it lowers the loss at init."""
    uniform, prior = loss_at_init(setup, "none"), loss_at_init(setup, "prior")
    counts = class_counts(setup)
    imbalance = float(counts[counts > 0].max() / counts[counts > 0].min())
    figure = f"loss at init {uniform:.3f} -> {prior:.3f} with the prior bias (classes {imbalance:.1f}x imbalanced)"
    details = {"uniform_bias": uniform, "prior_bias": prior, "imbalance": imbalance}
    if prior > uniform + 0.01:
        return Result("output_bias", figure, "no higher than without", "WARN",
                      "the prior bias raised the loss: the output layer's bias may not be the logits' offset", details)
    fix = "set model.init_output_bias=prior" if uniform - prior > 0.05 and setup.cfg.model.get("init_output_bias") != "prior" else ""
    return Result("output_bias", figure, "no higher than without", "WARN" if fix else "PASS", fix, details)


def check_gradients_flow(setup: Setup) -> Result:
    """Every trainable parameter gets a finite, non-zero gradient and changes after one update."""
    model = fresh(setup).train()
    x, y = setup.batch()
    F.cross_entropy(model(x), y).backward()
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    problems = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            problems[name] = "no gradient (unused)"
        elif not torch.isfinite(p.grad).all():
            problems[name] = "non-finite gradient"
        elif not p.grad.any():
            problems[name] = "zero gradient"
    build_optimizer(setup.cfg.optimizer, model).step()
    for name, p in model.named_parameters():
        if name in before and name not in problems and torch.equal(before[name], p.detach()):
            problems[name] = "unchanged after a step"
    figure = f"{len(before) - len(problems)} of {len(before)} parameters"
    if problems:
        listed = "; ".join(f"{k}: {v}" for k, v in list(problems.items())[:5])
        return Result("gradients_flow", figure, "all trainable parameters", "FAIL",
                      f"dead or unused parameters ({listed}): remove them, or fix the forward pass that skips them",
                      {"problems": problems})
    return Result("gradients_flow", figure, "all trainable parameters", "PASS")


def check_train_eval_mode(setup: Setup) -> Result:
    """Dropout/BatchNorm change outputs between train and eval mode; eval passes repeat exactly."""
    model = fresh(setup)
    x, _ = setup.batch(size=16)
    stochastic = any(isinstance(m, (nn.Dropout, nn.modules.batchnorm._BatchNorm)) for m in model.modules())
    with torch.no_grad():
        model.eval()
        first, second = model(x), model(x)
        model.train()
        trained = model(x)
    repeatable = torch.equal(first, second)
    differs = not torch.allclose(first, trained)
    figure = (f"eval passes {'identical' if repeatable else 'DIFFER'}; train vs eval "
              f"{'differ' if differs else 'identical'}" + ("" if stochastic else " (no dropout or BatchNorm)"))
    expected = "eval passes identical" + ("; train and eval differ" if stochastic else "")
    if not repeatable:
        return Result("train_eval_mode", figure, expected, "FAIL", "something random runs in eval mode: use "
                      "nn.Dropout (not F.dropout(training=True)) and respect self.training")
    if stochastic and not differs:
        return Result("train_eval_mode", figure, expected, "WARN", "dropout/BatchNorm have no effect in training "
                      "mode: check that the model is switched with model.train()")
    return Result("train_eval_mode", figure, expected, "PASS")
