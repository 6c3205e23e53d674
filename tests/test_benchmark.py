"""scripts/benchmark.py: rounds until a ratio is measured precisely enough; the GPU section runs (tiny, on the CPU)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_steady_ratio_takes_the_fewest_rounds_that_give_its_median_an_interval(script):
    ratios = script.rounds_of(3, lambda: 1.0, lambda: 0.99)
    assert len(ratios) == 6  # 5 rounds leave the median's 95% interval undefined (0.5**5 > 2.5%)
    assert script.median_interval(ratios) == pytest.approx((0.99, 0.99))
    assert "6 rounds" in script.described(ratios) and "could not" not in script.described(ratios)


def test_a_noisy_ratio_takes_more_rounds_until_the_cap_and_says_it_could_not(script):
    noisy = itertools.cycle([0.73, 1.14, 0.89, 0.95, 1.02])
    ratios = script.rounds_of(3, lambda: 1.0, lambda: next(noisy))
    assert len(ratios) == script.MAX_ROUNDS
    said = script.described(ratios)
    assert f"could not get the spread under 5% in {script.MAX_ROUNDS} rounds" in said, said


def test_rounds_stop_once_the_spread_is_under_the_goal(script):
    settling = iter([0.8, 1.2, 1.0, 1.01, 0.99, 1.0, 1.0, 1.01, 0.99, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    ratios = script.rounds_of(3, lambda: 1.0, lambda: next(settling))
    assert 6 < len(ratios) < script.MAX_ROUNDS
    low, high = script.median_interval(ratios)
    assert (high - low) / script.statistics.median(ratios) < script.SPREAD_GOAL


@pytest.mark.parametrize(("count", "expected"), [(5, None), (6, (1, 6)), (9, (2, 8)), (12, (3, 10)), (20, (6, 15))])
def test_the_interval_of_the_median_from_order_statistics(script, count, expected):
    assert script.median_interval(list(range(count, 0, -1))) == expected  # values 1..count, any order


@pytest.mark.slow
def test_the_gpu_section_of_the_benchmark_runs_and_writes_every_figure(tmp_path):
    out = tmp_path / "benchmark.json"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--sections", "gpu",
                             "--gpu-device", "cpu", "--out", str(out)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "RUNNER_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    figures = json.loads(out.read_text())
    keys = ["gpu_flagship_cache_device"] + [f"gpu_resnet50_cache_{cache}" for cache in ("device", "disk", "none")]
    for key in keys:
        assert figures[f"{key}_images_per_s"] > 0 and figures[f"{key}_images_per_s_min"] > 0


def test_the_regularization_section_writes_each_augmentations_ema_and_distillation_figures(tmp_path):
    out = tmp_path / "benchmark.json"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--sections", "regularization",
                             "--quick", "--rounds", "1", "--max-rounds", "1", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    figures = json.loads(out.read_text())
    for name in ("trivial", "rand", "erasing", "mixup", "cutmix"):
        assert figures[f"aug_{name}_ratio"] > 0
    assert figures["ema_ratio"] > 0 and figures["distill_teacher_over_student"] > 0


def test_without_cuda_the_gpu_section_says_it_is_skipped(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: the section runs")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--sections", "gpu",
                             "--out", str(tmp_path / "b.json")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "gpu figures: skipped, no CUDA device here" in result.stdout


def test_the_benchmark_answers_help():
    """--help crashed in argparse ('incomplete format': a '5%' in a help text is a format directive there)."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "--max-rounds" in result.stdout and "5%" in result.stdout, result.stderr[-500:]


@pytest.mark.slow
def test_the_transfer_section_measures_a_frozen_backbone_and_both_ends_of_a_resize_ramp(script, capsys):
    """Tiny, one round each: every figure is there and printed (nothing is asserted about speed)."""
    from functools import partial

    figures: dict = {}
    script.transfer_figures(figures, samples=16, size=32, ratios=partial(script.rounds_of, 1, most=1))
    for key in ("frozen_ratio", "trainable_epoch_s", "frozen_epoch_s", "resize_ratio", "resize_start_epoch_s",
                "resize_end_epoch_s"):
        assert len(figures[key]) == 1 and figures[key][0] > 0, key
    printed = capsys.readouterr().out
    assert "frozen_ratio: " in printed and "resize_ratio: " in printed and "s at 16 px" in printed
