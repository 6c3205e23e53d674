"""Shared fixtures: composing configs in-process, running the real command, a Flowers-102 folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image
from scipy.io import loadmat

PROJECT = Path(__file__).resolve().parents[1]
CONF = PROJECT / "conf"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# a tiny, fast setting for in-process and command-line runs
TINY = [
    "dataset=synthetic", "dataset.num_classes=7", "dataset.image_size=[11,13]", "dataset.channels=3",
    "dataset.train_size=30", "dataset.val_size=14", "dataset.test_size=14",
    "trainer.epochs=2", "trainer.batch_size=12", "trainer.micro_batch_size=4",
    "checkpoint.every_epochs=1", "evaluate.after_training=false",
]


def compose_config(overrides: list[str] | None = None, config_name: str = "train"):
    """The composed config, as `python -m runner OVERRIDES` (or runner.evaluate) would see it."""
    from runner.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides or []))


def cli_env() -> dict:
    """The environment of a command-line run: this checkout's runner, Hydra's short errors."""
    return {**os.environ, "PYTHONPATH": str(PROJECT), "HYDRA_FULL_ERROR": "0"}


def run_cli(args: list[str], cwd: Path, module: str = "runner", timeout: float = 300):
    """`python -m runner ARGS` in cwd; returns the CompletedProcess (stdout and stderr captured)."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=cli_env())


@pytest.fixture(scope="session")
def flowers_root(tmp_path_factory) -> Path:
    """Flowers-102 in its own on-disk layout: the real .mat files beside generated JPEGs.

    Each image is a flat colour drawn from its class (plus noise), so the label is learnable.
    torchvision.datasets.Flowers102 checks the .mat md5 sums and the jpg/ folder, not the images.
    """
    return make_flowers102(tmp_path_factory.mktemp("data"))


def make_flowers102(root: Path) -> Path:
    """The fixture's folder: root/flowers-102/{imagelabels.mat, setid.mat, jpg/image_00001.jpg ...}."""
    folder = root / "flowers-102"
    (folder / "jpg").mkdir(parents=True)
    for name in ("imagelabels.mat", "setid.mat"):
        shutil.copy(FIXTURES / "flowers102" / name, folder / name)
    labels = loadmat(folder / "imagelabels.mat", squeeze_me=True)["labels"]
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, size=(103, 3))
    for image_id, label in enumerate(labels, start=1):
        size = (20 + image_id % 7, 24 + image_id % 5)  # a few sizes, so resizing is exercised
        pixels = np.clip(palette[label] + rng.normal(0, 20, size=(*size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / "jpg" / f"image_{image_id:05d}.jpg", quality=85)
    return root


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A scratch working directory for command-line runs (their outputs/ land here)."""
    return tmp_path
