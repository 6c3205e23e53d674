"""The checks for the silent bugs of issue 23 (item 2): spatial_dependencies (a reshape that scrambles the
pixels of each sample) and augmentation_consistency (an augmentation that changes what the images are).
Each plant passed every other check before; each test asserts the verdict and that the fix names the cause."""

from __future__ import annotations

import pytest
import torch

from runner.checks.registry import CHECKS, run
from runner.checks.setup import Setup, setup_for
from tests.conftest import compose_config

# the practice's prime sides: 3 channels of 7 x 11, so no reshape between equal sizes can hide
PRIME = ["dataset=synthetic", "dataset.channels=3", "dataset.image_size=[7,11]", "dataset.train_size=64",
         "dataset.val_size=32", "dataset.test_size=32"]


def setup_of(*overrides) -> Setup:
    return setup_for(compose_config(list(overrides)), torch.device("cpu"))


def own_model(name: str) -> list[str]:
    return ["model=linear", f"model._target_=tests.byo_spatial_models.{name}"]


# ---- spatial_dependencies ----

SCRAMBLED = {
    "channels moved by view": "scrambled_cnn",
    "height and width swapped by view": "sides_swapped_cnn",
    "sizes written in (only the dataset's size fits)": "fixed_size_scrambled_cnn",
}


@pytest.mark.parametrize("name", SCRAMBLED)
def test_spatial_dependencies_fails_a_view_that_scrambles_the_pixels(name):
    result = CHECKS["spatial_dependencies"](setup_of(*PRIME, *own_model(SCRAMBLED[name])))
    assert result.verdict == "FAIL", (name, result.figure)
    assert "scattered over the image" in result.fix and "permute, not view" in result.fix, result.fix
    assert "features.0" in result.fix  # the layer whose input is scrambled


def test_the_fixed_size_model_is_charted_at_the_datasets_size():
    result = CHECKS["spatial_dependencies"](setup_of(*PRIME, *own_model("fixed_size_scrambled_cnn")))
    assert "3x7x11 input" in result.figure, result.figure
    healthy = CHECKS["spatial_dependencies"](setup_of(*PRIME, *own_model("plain_cnn")))
    assert "3x13x17 input" in healthy.figure, healthy.figure  # prime sides of its own where the model takes them


HEALTHY_SPATIAL = {
    "plain CNN": own_model("plain_cnn"),
    "pools, strides, dilates": own_model("pooled_cnn"),
    "convnet": ["model=convnet"],
    "lenet": ["model=lenet"],
    "resnet18": ["model=resnet18"],
}


@pytest.mark.parametrize("name", HEALTHY_SPATIAL)
@pytest.mark.parametrize("data", ["prime", "digits"])
def test_spatial_dependencies_passes_healthy_models(name, data):
    result = CHECKS["spatial_dependencies"](setup_of(*(PRIME if data == "prime" else []), *HEALTHY_SPATIAL[name]))
    assert result.verdict == "PASS", (name, data, result.figure, result.fix)
    assert "in every channel" in result.figure


def test_spatial_dependencies_passes_a_model_without_a_spatial_layer():
    result = CHECKS["spatial_dependencies"](setup_of(*PRIME, "model=mlp"))
    assert result.verdict == "PASS" and "no spatial layer" in result.figure


def test_mixing_samples_is_left_to_batch_independence():
    setup = setup_of(*PRIME, *own_model("batch_mixing_cnn"))
    assert CHECKS["spatial_dependencies"](setup).verdict == "PASS"  # within each sample, one window
    assert CHECKS["batch_independence"](setup).verdict == "FAIL"


@pytest.mark.slow
def test_the_scrambled_cnn_passes_every_other_check():
    """Why the check exists: measured before it did, every other check passes this plant (24 s)."""
    setup = setup_of("dataset=synthetic", "dataset.channels=3", "dataset.image_size=[7,11]", *own_model("scrambled_cnn"))
    others = [name for name in CHECKS if name not in ("spatial_dependencies", "augmentation_consistency")]
    verdicts = {r.check: r.verdict for r in run(setup, others)}
    assert set(verdicts.values()) == {"PASS"}, verdicts
