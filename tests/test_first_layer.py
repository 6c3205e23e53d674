"""eval/first_layer.png: the first layer's filters at the reference and the best checkpoint, and the flags for dead
filters and filters that did not move, on checkpoints made here from a model (no training)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from runner import models
from runner.common import checkpoint_files
from runner.evaluation import first_layer
from tests.conftest import TINY, compose_config


def test_dead_and_unmoved_filters_by_index():
    generator = torch.Generator().manual_seed(0)
    before = torch.randn(8, 3, 5, 5, generator=generator)
    after = before + 0.1 * torch.randn(8, 3, 5, 5, generator=generator)
    assert first_layer.dead_filters(after) == [] and first_layer.unmoved_filters(after, before) == []
    after[2] = 0  # dead: all zero (it moved there)
    after[5] = before[5]  # did not move
    after[6] = before[6] * (1 - 1e-4)  # weight decay alone, no gradient: moved far less than the others
    assert first_layer.dead_filters(after) == [2]
    assert first_layer.unmoved_filters(after, before) == [5, 6]


def test_a_mosaic_has_one_tile_per_filter_each_normalized_on_its_own():
    filters = torch.stack([torch.full((3, 4, 4), 5.0), torch.arange(48.0).reshape(3, 4, 4), -torch.ones(3, 4, 4)])
    image, tiles = first_layer.mosaic(filters, columns=2)
    assert tiles == 3
    assert image.shape == (2 * 4 + 1, 2 * 4 + 1, 3)  # 2 rows and 2 columns of 4x4 tiles, 1 pixel between
    second = image[0:4, 5:9]
    assert second.min() == pytest.approx(0.0) and second.max() == pytest.approx(1.0)  # per-filter normalized
    assert float(image[0, 0, 0]) == pytest.approx(0.5)  # a constant filter: mid grey, not a division by zero


def make_run(tmp_path: Path, overrides: list[str], plant=None, initial: bool = False) -> tuple[Path, torch.Tensor]:
    """A run folder with epoch-0001.pt (a fresh model) and epoch-0002.pt (every weight moved, then `plant`
    applied to the first layer's weight), and, when `initial`, checkpoints/updates/update-00000000.pt."""
    cfg = compose_config([*TINY, *overrides])
    config = OmegaConf.to_container(cfg, resolve=True)
    torch.manual_seed(0)
    model = models.build(cfg.model)
    run_dir = tmp_path / "run"
    start = {k: v.clone() for k, v in model.state_dict().items()}
    moved = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in start.items()}
    if plant is not None:
        plant(moved, start)
    for epoch, weights in ((1, start), (2, moved)):
        state = {"format_version": 1, "epoch": epoch, "global_step": 3 * epoch, "model": weights, "config": config}
        checkpoint_files.save_atomic(state, run_dir / "checkpoints" / f"epoch-{epoch:04d}.pt")
    if initial:
        state = {"format_version": 1, "epoch": 0, "global_step": 0, "model": start, "config": config, "light": True}
        checkpoint_files.save_atomic(state, run_dir / "checkpoints" / "updates" / "update-00000000.pt")
    return run_dir, torch.zeros(3, 11, 13)


BEST = {"checkpoint": "checkpoints/epoch-0002.pt", "split": "val", "weights": "raw"}
CONVNET = ["model=convnet", "model.channels=8", "model.n_blocks=1"]


def test_a_planted_dead_and_unmoved_filter_are_named_in_the_log_and_the_figure(tmp_path, caplog):
    def plant(moved, start):
        moved["stem.0.weight"][3] = 0
        moved["stem.0.weight"][5] = start["stem.0.weight"][5]

    run_dir, example = make_run(tmp_path, CONVNET, plant)
    with caplog.at_level(logging.INFO, logger="runner.evaluate"):
        found = first_layer.draw(run_dir, BEST, example, trusted=[])
    assert found["layer"] == "stem.0.weight" and found["dead"] == [3] and found["unmoved"] == [5]
    assert found["reference"] == "checkpoints/epoch-0001.pt" and found["tiles"] == 2 * 8
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "dead" in warned[0] and "#3" in warned[0] and "#5" in warned[0]
    assert "checkpoints/epoch-0001.pt" in warned[0]
    image = Image.open(run_dir / "eval" / "first_layer.png")
    assert image.size[0] > 300


def test_a_healthy_model_gets_no_flag_and_the_initial_weights_are_the_reference(tmp_path, caplog):
    run_dir, example = make_run(tmp_path, CONVNET, initial=True)
    with caplog.at_level(logging.INFO, logger="runner.evaluate"):
        found = first_layer.draw(run_dir, BEST, example, trusted=[])
    assert found["dead"] == [] and found["unmoved"] == []
    assert found["reference"] == "checkpoints/updates/update-00000000.pt"
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_a_linear_first_layer_is_drawn_as_its_rows_in_the_image_shape(tmp_path):
    run_dir, example = make_run(tmp_path, ["model=mlp", "model.hidden=70"])
    found = first_layer.draw(run_dir, BEST, example, trusted=[])
    assert found["shape"] == [70, 3, 11, 13]  # 429 inputs = 3 channels of 11 x 13
    assert found["tiles"] == 2 * first_layer.MOST_TILES  # the first 64 of 70 rows in each panel
    assert (run_dir / "eval" / "first_layer.png").exists()


def test_a_layer_all_about_zero_or_mostly_unmoved_is_flagged_by_the_absolute_floors():
    torch.manual_seed(0)
    before = torch.randn(8, 3, 3, 3)
    tiny = before * 1e-9  # the whole layer about 0: the relative test alone saw nothing
    assert first_layer.dead_filters(tiny) == list(range(8))
    after = before.clone()
    after[:2] += torch.randn(2, 3, 3, 3)  # two filters learned; six moved by 1e-7 of their norm alone
    after[2:] += 1e-7 * before[2:]
    assert first_layer.unmoved_filters(after, before) == [2, 3, 4, 5, 6, 7]
    assert first_layer.unmoved_filters(before.clone(), before) == list(range(8))
    line = first_layer.flags_line({"dead": list(range(8)), "unmoved": list(range(8)), "reference": "r",
                                   "shape": [8, 3, 3, 3]})
    assert "the whole layer is dead" in line and "the whole layer did not move" in line
    healthy = before + 0.1 * torch.randn(8, 3, 3, 3)
    assert first_layer.dead_filters(healthy) == [] and first_layer.unmoved_filters(healthy, before) == []
