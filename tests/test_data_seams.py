"""Data that is not what it seems (issue 21, items 10-14 and the data parts of 18): files rotated by their
EXIF orientation, 16-bit images, class folders that differ between splits, labels and tensors that do not
fit the config, and messages that point the right way."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from runner.data import datasets
from runner.data.image_files import image_files
from tests.conftest import compose_config

INVERSE = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def save_oriented(path, upright: np.ndarray, orientation: int, format: str = "PNG"):
    """A file whose stored pixels are `upright` turned so that a viewer (EXIF orientation) shows `upright`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(upright).transpose(INVERSE[orientation]).save(path, format=format, exif=exif)
    return path


def quadrant(height: int = 40, width: int = 24) -> np.ndarray:
    """Upright: the top-left quadrant white, the rest black (any wrong turn moves the white elsewhere)."""
    pixels = np.full((height, width, 3), 10, dtype=np.uint8)
    pixels[: height // 2, : width // 2] = 245
    return pixels


def folder_cfg(root, *overrides):
    return compose_config(["dataset=imagefolder", f"dataset.root={root}", *overrides]).dataset


def rotated_folder(root, format="PNG"):
    """train/val class folders; in each, two quadrant images stored sideways (orientation 6 and 8) and one upright."""
    for split in ("train", "val"):
        for c in ("a", "b"):
            save_oriented(root / split / c / "six.png", quadrant(), 6, format)
            save_oriented(root / split / c / "eight.png", quadrant(), 8, format)
            (root / split / c / "plain.png").parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(quadrant()).save(root / split / c / "plain.png")
    return root


# item 10: EXIF orientation ----------------------------------------------------------------------------------

@pytest.mark.parametrize("format", ["PNG", "JPEG"])
def test_exif_rotated_files_reach_the_model_upright_with_every_cache(tmp_path, monkeypatch, format):
    monkeypatch.setenv("RUNNER_CACHE", str(tmp_path / "cache"))
    root = rotated_folder(tmp_path / "images", format)
    seen = {}
    for cache in ("none", "disk", "memory"):
        splits = datasets.build_splits(folder_cfg(root, "dataset.image_size=[20,12]", f"dataset.cache={cache}"))
        for split in ("train", "val"):
            for i in range(len(splits[split])):
                pixels = splits[split].pixels(i).numpy().astype(float)  # (23, 14, 3) at the stored size
                h, w = pixels.shape[:2]
                name = image_files(splits[split])[i].name
                assert pixels.shape[:2] == (23, 14), (cache, name)
                assert pixels[: h // 2 - 1, : w // 2 - 1].mean() > 200, (cache, name)  # upright: white top-left
                assert pixels[h // 2 + 1 :, :].mean() < 50 and pixels[:, w // 2 + 1 :].mean() < 50, (cache, name)
                seen.setdefault((split, i), []).append(pixels)
    for (split, i), versions in seen.items():  # every cache setting: the same pixels
        assert all(np.array_equal(versions[0], v) for v in versions[1:]), (split, i)


def test_rotated_files_are_counted_like_the_other_conversions_and_sized_upright(tmp_path, caplog):
    root = rotated_folder(tmp_path / "images")
    tall = folder_cfg(root, "dataset.image_size=[40,24]")  # the upright size: nothing is enlarged
    with caplog.at_level("INFO"):
        _, screening = datasets.build_screened_splits(tall)
    assert screening.summary() == {"skipped": 0, "converted": {}, "rotated": 8, "upscaled": 0}
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("images:")]
    assert lines == ["images: 8 turned upright by their EXIF orientation"]


def test_the_cache_key_changes_with_the_way_files_are_read(tmp_path):
    """A cache written before files were turned upright must not be read as if it were."""
    from runner.data.cache import cache_key

    root = rotated_folder(tmp_path / "images")
    files = sorted(root.rglob("*.png"))
    described = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    before = hashlib.sha256(json.dumps([described, (23, 14), 3, 1]).encode()).hexdigest()[:24]  # the old key
    assert cache_key(files, (23, 14), 3) != before


def test_the_report_sees_rotated_files_upright_not_as_duplicates(tmp_path):
    """The same stored pixels with orientation 6 (train) and 8 (val) are two different upright pictures."""
    from runner.checks.data import scan_files
    from runner.checks.neighbours import near_duplicates
    from runner.checks.report_views import unaugmented_splits

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    raw = rng.integers(0, 256, (24, 16, 3), dtype=np.uint8)
    save_oriented(root / "train" / "a" / "x.png", np.asarray(Image.fromarray(raw).transpose(Image.Transpose.ROTATE_270)), 6)
    save_oriented(root / "val" / "a" / "y.png", np.asarray(Image.fromarray(raw).transpose(Image.Transpose.ROTATE_90)), 8)
    for split in ("train", "val"):
        for c in ("a", "b"):
            for n in range(4):
                path = root / split / c / f"noise{n}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)).save(path)
    assert np.array_equal(np.asarray(Image.open(root / "train" / "a" / "x.png")),
                          np.asarray(Image.open(root / "val" / "a" / "y.png")))  # stored the same, shown 180 degrees apart
    cfg = compose_config(["dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=[16,16]"])
    findings = near_duplicates(unaugmented_splits(cfg), channels=3)
    across = [p for f in findings if f["splits"] == ("train", "val") for p in f["pairs"] if p["near_duplicate"]]
    assert not across, across
    records, _, _ = scan_files([root / "train" / "a" / "x.png"], 3)
    assert records[0][1] == (24, 16)  # (width, height) as a viewer shows it
