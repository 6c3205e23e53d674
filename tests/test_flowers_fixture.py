"""scripts/make_flowers_fixture.py: Flowers-102 offline, the real label and split files beside generated JPEGs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from PIL import Image
from scipy.io import loadmat

from runner.data import datasets, introspect
from runner.data.image_files import image_files
from tests.conftest import PROJECT, compose_config


def fixture_script():
    spec = importlib.util.spec_from_file_location("make_flowers_fixture", PROJECT / "scripts" / "make_flowers_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("flowers")
    fixture_script().main([str(root), "--per-class", "1"])
    return root


def test_the_flowers_dataset_reads_the_fixture_with_its_official_splits_and_labels(made):
    cfg = compose_config(["+experiment=flowers", f"dataset.root={made}", "dataset.image_size=[16,16]"]).dataset
    splits = datasets.build_splits(cfg)  # download=true as in the experiment: the files are there, nothing fetched
    assert [len(splits[s]) for s in datasets.SPLITS] == [1020, 1020, 6149]
    labels = loadmat(made / "flowers-102" / "imagelabels.mat", squeeze_me=True)["labels"] - 1
    for split in datasets.SPLITS:
        files = image_files(splits[split])
        ids = [int(f.stem.split("_")[1]) for f in files]
        assert introspect.labels_of(splits[split]).tolist() == [int(labels[i - 1]) for i in ids]
    image, label = splits["train"][0]
    assert tuple(image.shape) == (3, 16, 16) and 0 <= label < 102


def test_the_images_are_jpegs_at_flowers_sizes_and_drawn_per_class(made):
    folder = made / "flowers-102" / "jpg"
    assert len(list(folder.glob("image_*.jpg"))) == 8189
    sizes = set()
    for image_id in (1, 2, 3, 500, 4000, 8189):
        with Image.open(folder / f"image_{image_id:05d}.jpg") as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            sizes.add(image.size)
            assert min(image.size) == 500 and 500 <= max(image.size) <= 700
    assert len(sizes) > 1
    labels = loadmat(made / "flowers-102" / "imagelabels.mat", squeeze_me=True)["labels"]
    first = {}
    for image_id, label in enumerate(labels, start=1):  # --per-class 1: the first of each class drawn
        first.setdefault(label, image_id)
    drawn = [folder / f"image_{i:05d}.jpg" for i in sorted(first.values())[:3]]
    assert len({p.read_bytes() for p in drawn}) == 3  # classes differ
    image_id = sorted(first.values())[0]  # deterministic: drawn again, the same bytes
    assert fixture_script().jpeg_bytes(image_id, int(labels[image_id - 1]) - 1) == drawn[0].read_bytes()
