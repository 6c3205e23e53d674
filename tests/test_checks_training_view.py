"""The checks look at what training will do (issue #12, items 5 and 6): the micro-batch the loop
runs, the loss it is configured with, BatchNorm at that micro-batch, and frozen parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from runner.checks.registry import CHECKS, PREFLIGHT
from runner.checks.setup import Setup, setup_for
from tests.conftest import compose_config

DIGITS = ["checks.overfit_steps=150", "checks.baseline_steps=40"]


def digits_setup(*overrides) -> Setup:
    return setup_for(compose_config([*DIGITS, *overrides]), torch.device("cpu"))


def with_model(setup: Setup, make) -> Setup:
    healthy = setup.make_model
    return Setup(setup.cfg, setup.splits, lambda init_output_bias=None: make(healthy(init_output_bias)))


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
    assert result.verdict == "PASS"
    assert "frozen" in result.figure and "extra.weight" in result.figure and "2 frozen" in result.figure, result


@pytest.mark.slow
def test_freezing_a_randomly_initialised_backbone_fails_with_the_fix():
    result = CHECKS["gradients_flow"](digits_setup("model=resnet18", "model.freeze=backbone"))
    assert result.verdict == "FAIL" and "model.pretrained=true" in result.fix and "random" in result.fix, result
    assert CHECKS["gradients_flow"](digits_setup("model=resnet18")).verdict == "PASS"
