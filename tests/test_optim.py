"""Schedules in epochs, stepped per update, against torch's own schedulers as the reference."""

from __future__ import annotations

import pytest
import torch
from torch.optim import lr_scheduler

from runner.training.optim import build_schedule
from tests.conftest import compose_config

UPDATES_PER_EPOCH, EPOCHS = 7, 5
TOTAL = UPDATES_PER_EPOCH * EPOCHS


def lrs(scheduler, optimizer, steps=TOTAL):
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def ours(schedule: str, *overrides):
    cfg = compose_config([f"schedule={schedule}", *overrides])
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    return lrs(build_schedule(cfg.schedule, optimizer, UPDATES_PER_EPOCH, EPOCHS), optimizer)


def reference(make):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    return lrs(make(optimizer), optimizer)


@pytest.mark.parametrize(("schedule", "overrides", "make"), [
    ("constant", [], lambda o: lr_scheduler.LambdaLR(o, lambda s: 1.0)),
    ("step", ["schedule.step_epochs=2", "schedule.gamma=0.5"],
     lambda o: lr_scheduler.StepLR(o, step_size=2 * UPDATES_PER_EPOCH, gamma=0.5)),
    ("cosine", [], lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=TOTAL)),
    ("linear", [], lambda o: lr_scheduler.LinearLR(o, start_factor=1.0, end_factor=0.0, total_iters=TOTAL)),
    # torch puts the peak at pct_start * total_steps - 1 and the end at total_steps - 1 (in updates)
    ("onecycle", [], lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=TOTAL + 1,
                                                       pct_start=(0.3 * TOTAL + 1) / (TOTAL + 1),
                                                       anneal_strategy="cos", cycle_momentum=False,
                                                       three_phase=False)),
])
def test_schedules_match_torch(schedule, overrides, make):
    assert ours(schedule, *overrides) == pytest.approx(reference(make), rel=1e-2, abs=1e-6)


def test_warmup_cosine_warms_up_linearly_then_decays():
    values = ours("warmup_cosine", "schedule.warmup_epochs=1")
    warmup = values[:UPDATES_PER_EPOCH]
    # the first update uses the first warmup step's rate (not 0: a wasted update), the last one the full rate
    assert warmup == pytest.approx([0.1 * (i + 1) / UPDATES_PER_EPOCH for i in range(UPDATES_PER_EPOCH)])
    assert values[UPDATES_PER_EPOCH] == pytest.approx(0.1)
    decay = values[UPDATES_PER_EPOCH:]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False)) and decay[-1] < 0.01


def test_precision_auto_picks_bf16_only_where_the_gpu_has_it_natively(monkeypatch):
    """V100/T4-class GPUs emulate bf16 (slowly): auto must choose fp16 with the GradScaler there."""
    import torch

    from runner.common.runtime import autocast_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert autocast_dtype("auto", torch.device("cuda")) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert autocast_dtype("auto", torch.device("cuda")) == torch.bfloat16
