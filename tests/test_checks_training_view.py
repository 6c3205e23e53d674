"""The checks look at what training will do (issue #12, items 5 and 6): the micro-batch the loop
runs, the loss it is configured with, BatchNorm at that micro-batch, and frozen parameters."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from runner.checks.lr_range_test import range_test
from runner.checks.registry import CHECKS, PREFLIGHT
from tests.test_checks import digits_setup, with_model


def batch_normed(inner: nn.Module) -> nn.Module:
    return nn.Sequential(inner, nn.BatchNorm1d(10))


def test_batchnorm_at_a_micro_batch_of_one_fails_before_training_crashes():
    setup = with_model(digits_setup("trainer.batch_size=8", "trainer.micro_batch_size=1"), batch_normed)
    result = CHECKS["normalization"](setup)
    assert result.verdict == "FAIL", result
    assert "micro-batch of 1" in result.figure and "GroupNorm" in result.fix and "micro_batch_size" in result.fix
    assert "normalization" in PREFLIGHT


def test_batchnorm_with_accumulation_warns_that_it_sees_the_micro_batch_not_the_learning_batch():
    setup = with_model(digits_setup("trainer.batch_size=64", "trainer.micro_batch_size=16"), batch_normed)
    result = CHECKS["normalization"](setup)
    assert result.verdict == "WARN" and "micro-batches of 16" in result.figure and "64" in result.figure, result


def test_an_epochs_last_micro_batch_of_one_sample_is_found():
    # digits: 1079 training samples; learning batches of 6 in micro-batches of 2: the last holds 1079 % 6 = 5
    # samples, in micro-batches of 2, 2 and 1
    setup = with_model(digits_setup("trainer.batch_size=6", "trainer.micro_batch_size=2"), batch_normed)
    result = CHECKS["normalization"](setup)
    assert result.verdict == "FAIL" and "last micro-batch" in result.figure, result


def test_no_batchnorm_passes_the_normalization_check():
    assert CHECKS["normalization"](digits_setup()).verdict == "PASS"


def test_the_checks_train_at_the_training_micro_batch():
    seen = []

    class Recording(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            if self.training:
                seen.append(len(x))
            return self.inner(x)

    setup = with_model(digits_setup("trainer.batch_size=8", "trainer.micro_batch_size=4", "checks.overfit_steps=3"),
                       Recording)
    CHECKS["overfit_batch"](setup)
    assert seen and set(seen) == {4}


def test_the_checks_use_the_configured_loss():
    smoothed = digits_setup("loss.label_smoothing=0.2")  # healthy: its floor is above zero, no false alarm
    assert CHECKS["overfit_batch"](smoothed).verdict == "PASS", CHECKS["overfit_batch"](smoothed)
    assert CHECKS["loss_at_init"](smoothed).verdict == "PASS"
    broken = digits_setup("loss._target_=tests.byo_losses.always_class_0", "~loss.label_smoothing")  # a loss bug now shows
    result = CHECKS["overfit_batch"](broken)
    assert result.verdict == "FAIL", result
    focal = digits_setup("loss._target_=tests.byo_losses.focal", "~loss.label_smoothing")  # its own value at init, not ln(C)
    result = CHECKS["loss_at_init"](focal)
    assert result.verdict == "PASS" and "uniform predictions" in result.expected, result


class PartlyFrozen(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.extra = inner, nn.Linear(10, 10)
        for p in self.extra.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        return self.extra(self.inner(x))


def test_frozen_parameters_are_counted_and_named():
    result = CHECKS["gradients_flow"](with_model(digits_setup(), PartlyFrozen))
    assert result.verdict == "FAIL" and "tensors frozen at their initial values" in result.fix  # issue 23 item 1
    assert "frozen" in result.figure and "extra.weight" in result.figure and "2 frozen" in result.figure, result


@pytest.mark.slow
def test_freezing_a_randomly_initialised_backbone_fails_with_the_fix():
    result = CHECKS["gradients_flow"](digits_setup("model=resnet18", "model.freeze=backbone"))
    assert result.verdict == "FAIL" and "model.pretrained=true" in result.fix and "random" in result.fix, result
    assert CHECKS["gradients_flow"](digits_setup("model=resnet18")).verdict == "PASS"


def test_the_range_test_updates_once_per_learning_batch_in_micro_batches():

    seen, steps = [], []

    class Recording(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            seen.append(len(x))
            return self.inner(x)

    setup = with_model(digits_setup("trainer.batch_size=32", "trainer.micro_batch_size=8"), Recording)
    original = torch.optim.AdamW.step
    torch.optim.AdamW.step = lambda self, *a, **k: steps.append(1) or original(self, *a, **k)
    try:
        curve = range_test(setup, OmegaConf.merge(setup.cfg.lr_find, {"steps": 5, "diverge_factor": 1e9}))
    finally:
        torch.optim.AdamW.step = original
    assert len(curve["lr"]) == len(steps) == 5 and seen == [8] * 20  # 5 updates of 32 samples, 4 micro-batches each


def test_the_suggestion_rules_on_a_known_curve():
    import numpy as np

    from runner.checks.lr_range_test import suggest

    lrs = np.logspace(-6, 0, 61)
    loss = np.concatenate([np.full(20, 2.3), np.linspace(2.3, 0.3, 31)[1:], np.linspace(0.3, 5.0, 11)])
    curve = {"lr": list(lrs), "smoothed": list(loss)}
    assert suggest(curve, "minimum") == pytest.approx(lrs[49] / 10)  # the lowest loss's lr / 10
    # fastai's valley: the fall is 31 steps long (19..49), counted from 49 - 31 = 18: 18 + 10 + 5
    assert suggest(curve, "valley") == pytest.approx(lrs[33])
    assert lrs[20] <= suggest(curve, "steepest") <= lrs[49]


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [[], ["optimizer=sgd"], ["dataset=synthetic", "model=convnet", "model.channels=8"]],
                         ids=["digits-adamw", "digits-sgd", "synthetic-convnet"])
def test_training_at_the_default_suggestion_beats_10x_below_and_10x_above_is_no_clear_gain(overrides):
    import math

    from runner.checks.lr_range_test import range_test, suggest
    from runner.checks.setup import fresh
    from runner.checks.training import train_steps

    setup = digits_setup(*overrides)
    lr = suggest(range_test(setup, setup.cfg.lr_find), setup.cfg.lr_find.method)

    def trained_val_loss(rate: float) -> float:
        model = fresh(setup)
        batches = [setup.batch(size=setup.cfg.trainer.batch_size, seed=s) for s in range(16)]
        train_steps(setup, model, batches, 60, lr=rate)
        x, y = setup.batch("val", size=400)
        with torch.no_grad():
            loss = float(setup.mean_loss(model.eval()(x), y))
        return loss if math.isfinite(loss) else math.inf

    below, at, above = (trained_val_loss(lr * factor) for factor in (0.1, 1.0, 10.0))
    assert at < 0.5 * math.log(setup.num_classes), (lr, below, at, above)  # it trains
    assert at < 0.8 * below, (lr, below, at, above)  # not too low
    assert above > at - 0.15, (lr, below, at, above)  # nor far too low: 10x more is no clear gain


def test_the_range_test_keeps_the_layer_decays_ratios_between_the_groups(monkeypatch):
    """optimizer.layer_decay gives each layer its share of the lr: the range test raises them all together, as
    training's schedule does, instead of setting every group to one lr (the layers' decay was lost)."""
    from runner.checks import training

    setup = digits_setup("model=mlp", "optimizer.layer_decay=0.5", "optimizer.no_decay_norm_and_bias=false")
    seen = []
    real = training.Stepper.__call__
    monkeypatch.setattr(training.Stepper, "__call__", lambda self, x, y: seen.append(
        sorted(g["lr"] for g in self.optimizer.param_groups)) or real(self, x, y))
    curve = range_test(setup, OmegaConf.merge(setup.cfg.lr_find, {"steps": 3, "diverge_factor": 1e9}))
    for lr, lrs in zip(curve["lr"], seen, strict=True):  # the mlp's three layers: x0.25, x0.5, x1
        assert lrs == pytest.approx([lr * 0.25, lr * 0.5, lr])
