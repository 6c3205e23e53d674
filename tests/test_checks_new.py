"""The checks for the silent bugs of issue 23 (item 2): spatial_dependencies (a reshape that scrambles the
pixels of each sample) and augmentation_consistency (an augmentation that changes what the images are).
Each plant passed every other check before; each test asserts the verdict and that the fix names the cause."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from runner.checks.registry import CHECKS, run
from runner.checks.setup import Setup, setup_for
from tests.conftest import compose_config, make_imagefolder

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



# ---- augmentation_consistency ----

def own_data(name: str) -> list[str]:
    return ["dataset=custom", f"dataset._target_=tests.byo_augment_data.{name}", "dataset.num_classes=10",
            "dataset.channels=1", "dataset.image_size=8"]


def test_augmentation_consistency_fails_runners_flip_of_digits():
    result = CHECKS["augmentation_consistency"](setup_of("dataset.augment=basic"))
    assert result.verdict == "FAIL", (result.figure, result.fix)
    assert "dataset.augment=basic mirrors images" in result.fix and "dataset.augment=none" in result.fix, result.fix
    assert result.details["flips_change_class"] == ["mirrors images (left-right)"]


def test_augmentation_consistency_fails_a_users_own_training_flip():
    result = CHECKS["augmentation_consistency"](setup_of(*own_data("flipped_digits")))
    assert result.verdict == "FAIL", (result.figure, result.fix)
    assert "own transform of dataset._target_=tests.byo_augment_data.flipped_digits mirrors images" in result.fix
    assert "remove the flip" in result.fix, result.fix


@pytest.mark.parametrize("overrides", [[], own_data("noisy_digits")], ids=["no augmentation", "light noise"])
def test_augmentation_consistency_passes_augmentation_that_keeps_the_class(overrides):
    result = CHECKS["augmentation_consistency"](setup_of(*overrides))
    assert result.verdict == "PASS", (result.figure, result.fix)
    assert ("no augmentation" in result.figure) == (not overrides)


def test_augmented_views_are_drawn_as_the_loader_draws_them():
    from runner.checks.augmentation import sample_seed, stacked
    from runner.data.loaders import SeededSamples

    train = setup_of("dataset.augment=basic").splits["train"]
    views, _ = stacked(train, [3, 5], seed=2)
    loader = SeededSamples(train)
    assert torch.equal(views[0], loader[(3, sample_seed(2, 3))][0]) and torch.equal(views[1], loader[(5, sample_seed(2, 5))][0])



def half_lit_folder(root: Path, per_class: int = 60) -> Path:
    """Image files of 3 classes told apart by which side is lit: left, right, both (a mirror swaps the first two)."""
    rng = np.random.default_rng(0)
    for label, lit in enumerate([(slice(None), slice(0, 12)), (slice(None), slice(12, 24)), (slice(None), slice(None))]):
        (root / f"class_{label}").mkdir(parents=True)
        for n in range(per_class):
            pixels = np.full((20, 24, 3), 40.0)
            pixels[lit] = 200
            pixels = np.clip(pixels + rng.normal(0, 20, pixels.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class_{label}" / f"image_{n}.png")
    return root


@pytest.mark.parametrize("kind", ["sides", "colours"])
def test_augmentation_consistency_on_image_files_augmented_on_the_batch(tmp_path, kind):
    """Files reach the model as uint8 pixels cropped and flipped per batch (batch_augment.Finish): the
    flip of side-lit images changes their class; that of flat colours keeps it."""
    root = half_lit_folder(tmp_path) if kind == "sides" else make_imagefolder(tmp_path, per_class=60)
    result = CHECKS["augmentation_consistency"](setup_of("dataset=imagefolder", f"dataset.root={root}",
                                                          "dataset.image_size=16", "dataset.augment=basic"))
    assert result.verdict == ("FAIL" if kind == "sides" else "PASS"), (result.figure, result.fix)
    assert ("dataset.augment=basic mirrors images" in result.fix) == (kind == "sides"), result.fix


SILENT_PLANTS = {
    "view for permute": ("spatial_dependencies", ["dataset=synthetic", "dataset.channels=3", "dataset.image_size=[7,11]",
                                                  *own_model("scrambled_cnn")]),
    "digits mirrored by dataset.augment=basic": ("augmentation_consistency", ["dataset.augment=basic"]),
    "digits mirrored by the user's own transform": ("augmentation_consistency", own_data("flipped_digits")),
}


@pytest.mark.slow
@pytest.mark.parametrize("plant", SILENT_PLANTS)
def test_the_plants_pass_every_other_check(plant):
    """Why the two checks exist: measured before they did, every other check passed these plants (about 25 s each)."""
    caught_by, overrides = SILENT_PLANTS[plant]
    others = [name for name in CHECKS if name not in ("spatial_dependencies", "augmentation_consistency")]
    setup = setup_of(*overrides)
    verdicts = {r.check: r.verdict for r in run(setup, others)}
    assert set(verdicts.values()) == {"PASS"}, verdicts
    assert run(setup, [caught_by])[0].verdict == "FAIL"


def test_augmentation_consistency_does_not_judge_on_a_handful_of_images():
    result = CHECKS["augmentation_consistency"](setup_of("dataset=synthetic", "dataset.train_size=30",
                                                         "dataset.augment=basic"))
    assert result.verdict == "WARN" and "too few" in result.fix, (result.figure, result.fix)
