"""The interval's figures: the mean gradient norm of the updates that happened (fp16 skips some)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from runner.training.distributed import SINGLE
from runner.training.meter import IntervalMeter


def fp16_run() -> SimpleNamespace:
    scaler = SimpleNamespace(get_scale=lambda: 1024.0)
    schedule = SimpleNamespace(get_last_lr=lambda: [0.1])
    return SimpleNamespace(processes=SINGLE, first_bad_step=torch.tensor(-1), schedule=schedule, fp16=True,
                           scaler=scaler)


def test_skipped_fp16_updates_are_left_out_of_the_mean_gradient_norm_and_counted():
    meter = IntervalMeter(torch.device("cpu"))
    for norm in (2.0, 2.0, math.inf, math.nan):  # the GradScaler skips the last two updates
        meter.add_update(torch.tensor(1.0), torch.tensor(1.0), 4, torch.tensor(norm))
    figures = meter.read(fp16_run(), epoch=0)
    assert figures["grad_norm"] == 2.0 and figures["skipped_steps"] == 2


def test_an_interval_whose_every_update_was_skipped_has_no_gradient_norm():
    meter = IntervalMeter(torch.device("cpu"))
    meter.add_update(torch.tensor(1.0), torch.tensor(1.0), 4, torch.tensor(math.inf))
    figures = meter.read(fp16_run(), epoch=0)
    assert math.isnan(figures["grad_norm"]) and figures["skipped_steps"] == 1
