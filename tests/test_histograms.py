"""trainer.log_histograms_every=N: per-layer histograms of the weights and of the last update in TensorBoard,
and the update/weight norm ratio (the practice's ~1e-3 rule) as a scalar; training unchanged."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from runner.run import train_and_evaluate as train_job
from runner.training import histograms
from tests.conftest import PROJECT, TINY, assert_identical, compose_config, refused_in_one_line
from tests.conftest import checkpoint_weights as weights


def events(folder) -> EventAccumulator:
    accumulator = EventAccumulator(str(folder), size_guidance={"histograms": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def test_the_histograms_and_the_ratio_against_a_hand_computation(tmp_path):
    model = nn.Linear(3, 2)
    before = torch.tensor([[-1.25, 0.0, 1.0], [2.0, 3.0, 7.25]])
    after = torch.tensor([[-1.0, 0.0, 1.0], [2.0, 3.0, 7.0]])  # the update: +0.25 and -0.25, zero elsewhere
    with torch.no_grad():
        model.weight.copy_(before)
        model.bias.copy_(torch.tensor([0.5, -0.5]))
    writer = SummaryWriter(tmp_path)
    log = histograms.Histograms(model, writer, every=2)
    log.before_update(global_step=0)  # the next update (1) is not logged: nothing kept, nothing written
    log.after_update(global_step=1)
    log.before_update(global_step=1)  # the next one (2) is
    with torch.no_grad():
        model.weight.copy_(after)
    log.after_update(global_step=2)
    writer.close()

    found = events(tmp_path)
    (weight,) = found.Histograms("weights/weight")
    value = weight.histogram_value
    assert weight.step == 2 and (value.min, value.max, value.num) == (-1.0, 7.0, 6)
    assert value.sum == pytest.approx(12.0) and value.sum_squares == pytest.approx(1 + 1 + 4 + 9 + 49)
    # 32 equal buckets over [min, max] = [-1, 7]: a bucket is 0.25 wide; the top value falls in the last one
    expected = [0] * histograms.BINS
    for index in (0, 3, 7, 11, 15, 31):  # -1, 0, 1, 2, 3, 7 (bucket i holds (limit[i-1], limit[i]], as TensorBoard reads it)
        expected[index] = 1
    assert list(value.bucket) == expected
    assert value.bucket_limit[0] == pytest.approx(-0.75) and value.bucket_limit[-1] == pytest.approx(7.0)

    (update,) = found.Histograms("updates/weight")
    delta = update.histogram_value
    assert (delta.min, delta.max, delta.num) == (-0.25, 0.25, 6)
    assert delta.sum == pytest.approx(0.0) and delta.sum_squares == pytest.approx(0.125)
    (ratio,) = found.Scalars("update_ratio/weight")
    assert ratio.step == 2 and ratio.value == pytest.approx(math.sqrt(0.125) / 8)  # |w| = sqrt(64)
    (bias_ratio,) = found.Scalars("update_ratio/bias")
    assert bias_ratio.value == 0.0
    (bias,) = found.Histograms("weights/bias")
    assert (bias.histogram_value.min, bias.histogram_value.max) == (-0.5, 0.5)


def test_zero_is_refused_in_one_line(capsys):
    line = refused_in_one_line([*TINY, "trainer.log_histograms_every=0"], capsys)
    assert "trainer.log_histograms_every" in line and "Fix: trainer.log_histograms_every=100" in line


def test_a_run_with_histograms_trains_the_same_weights_and_tensorboard_reads_them(tmp_path, caplog):
    settings = [*TINY, "trainer.deterministic=true", "model.dropout=0.3", "dataset.augment=basic"]
    train_job(compose_config(settings), tmp_path / "plain")
    with caplog.at_level("INFO"):
        train_job(compose_config([*settings, "trainer.log_histograms_every=2"]), tmp_path / "watched")
    assert "histograms of each layer's weights and last update every 2 updates in TensorBoard" in caplog.text
    for epoch in (1, 2):
        assert_identical(weights(tmp_path / "plain", epoch), weights(tmp_path / "watched", epoch))

    layers = list(weights(tmp_path / "watched", 2))  # the MLP's parameters (its buffers: none)
    found = events(tmp_path / "watched" / "tb")
    for layer in layers:  # 6 updates: histograms at 2, 4 and 6
        assert [event.step for event in found.Histograms(f"weights/{layer}")] == [2, 4, 6]
        assert [event.step for event in found.Histograms(f"updates/{layer}")] == [2, 4, 6]
        assert all(0 < event.value < 1 for event in found.Scalars(f"update_ratio/{layer}"))
    assert not [tag for tag in events(tmp_path / "plain" / "tb").Tags()["histograms"]]


def test_the_benchmark_section_measures_a_histogram_step_against_an_update(capsys):
    """scripts/benchmark.py --sections histograms, tiny, one round: each figure is there (the speed is not tested)."""
    spec = importlib.util.spec_from_file_location("benchmark", PROJECT / "scripts" / "benchmark.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    figures: dict = {}
    script.histogram_figures(figures, size=8, ratios=lambda baseline, measured: [measured() / baseline()],
                             model_name="mlp")
    (step_over_update,), (ratio,) = figures["histogram_step_over_update"], figures["histograms_ratio_every_100"]
    assert step_over_update > 0 and ratio == pytest.approx(1 + step_over_update / 100)
    assert "histograms_ratio_every_100: " in capsys.readouterr().out


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_skipped_not_a_crash_so_the_meter_stops_the_run(bad):
    class Writer:
        def __init__(self):
            self.tags = []

        def add_histogram_raw(self, tag, **_):
            self.tags.append(tag)

        def add_scalar(self, tag, *_):
            self.tags.append(tag)

    model, writer = nn.Linear(3, 2), Writer()
    log = histograms.Histograms(model, writer, every=1)
    log.before_update(global_step=0)
    with torch.no_grad():
        model.weight[0, 1] = bad  # a diverging run's weights
    log.after_update(global_step=1)
    assert "weights/weight" not in writer.tags and "updates/weight" not in writer.tags
    assert {"weights/bias", "updates/bias"} <= set(writer.tags)  # the finite layers are still drawn
