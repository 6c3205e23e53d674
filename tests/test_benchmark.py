"""scripts/benchmark.py: the GPU section runs (tiny, on the CPU) and writes its figures to JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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


def test_without_cuda_the_gpu_section_says_it_is_skipped(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: the section runs")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--sections", "gpu",
                             "--out", str(tmp_path / "b.json")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "gpu figures: skipped, no CUDA device here" in result.stdout
