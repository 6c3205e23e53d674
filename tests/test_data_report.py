"""The data report's views the practice asks for (issue #12, item 11): near-duplicates by nearest
neighbours within and across splits, augmented views beside the stored image, stretched images."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from runner.checks.neighbours import near_duplicates
from runner.checks.setup import setup_for
from tests.conftest import compose_config, run_cli


def test_a_slightly_changed_copy_of_a_validation_image_in_train_is_the_closest_cross_split_pair():
    setup = setup_for(compose_config([]), torch.device("cpu"))  # digits
    x, y = setup.splits["train"].tensors
    val_x, val_y = setup.splits["val"].tensors
    planted = 100
    x = x.clone()
    x[planted] = val_x[7] + 0.01 * torch.randn_like(val_x[7])  # not byte-identical: content hashes miss it
    y = y.clone()
    y[planted] = val_y[7]
    splits = {**setup.splits, "train": TensorDataset(x, y)}
    findings = near_duplicates(splits, channels=1)
    for space in ("pixels", "random features"):
        across = next(f for f in findings if f["space"] == space and f["splits"] == ("train", "val"))
        closest = across["pairs"][0]
        assert (closest["a"], closest["b"]) == (planted, 7) and closest["near_duplicate"], (space, closest)
        assert closest["distance"] < 0.25 * across["pairs"][1]["distance"]  # far closer than two similar digits
    within = next(f for f in findings if f["space"] == "pixels" and f["splits"] == ("train", "train"))
    assert all(p["a"] != p["b"] for p in within["pairs"])


@pytest.mark.slow
def test_a_checkpoint_shows_the_training_samples_with_planted_wrong_labels_among_its_highest_losses(workdir):
    from runner.checks.report_views import highest_loss_section

    trained = run_cli(["trainer.epochs=10", "evaluate.after_training=false", "hydra.run.dir=run"], cwd=workdir)
    assert trained.returncode == 0, trained.stderr[-2000:]
    checkpoint = workdir / "run" / "checkpoints" / "epoch-0010.pt"
    setup = setup_for(compose_config([]), torch.device("cpu"))
    x, y = setup.splits["train"].tensors
    planted = [3, 50, 400, 777, 1000]
    y = y.clone()
    y[planted] = (y[planted] + 5) % 10  # label noise
    splits = {**setup.splits, "train": TensorDataset(x, y)}
    figures, lines = highest_loss_section(setup, splits, [str(c) for c in range(10)], str(checkpoint))
    shown = " ".join(lines)
    assert all(f"train {i} " in shown for i in planted), shown  # among the 16 named
    assert "highest_loss" in figures


@pytest.mark.slow
def test_the_report_has_the_neighbours_views_and_stretched_images(workdir, tmp_path):
    from tests.conftest import make_imagefolder

    root = make_imagefolder(tmp_path / "images", size=(20, 36))  # not square: stretched to 24x24
    result = run_cli(["dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=24", "hydra.run.dir=report"],
                     cwd=workdir, module="runner.inspect_data")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = (workdir / "report" / "report.md").read_text()
    assert "## nearest neighbours" in report and "## stretched images" in report
    for name in ("neighbours", "views"):
        assert (workdir / "report" / f"{name}.png").stat().st_size > 5_000


# ---- issue 23 item 6: stored samples as stored, classes with zero or doubled samples, a flip that changes the class ----

def test_as_stored_shows_the_stored_tensor_not_a_random_augmented_draw():
    from runner.checks.pictures import as_stored
    from runner.data.transforms import channel_stats, denormalize

    setup = setup_for(compose_config(["dataset.augment=basic"]), torch.device("cpu"))  # digits: crop + flip
    train = setup.splits["train"]
    mean, std = channel_stats(setup.cfg.dataset)
    pictures = [as_stored(train, 5, mean, std) for _ in range(2)]
    stored = denormalize(train.images[5], mean, std)[0].numpy()
    assert (pictures[0] == pictures[1]).all() and (pictures[0] == stored).all()


def test_as_stored_shows_a_uint8_array_as_stored():
    import numpy as np

    from runner.checks.pictures import as_stored
    from runner.data.pixels import ImagePixels

    cfg = compose_config(["dataset=cifar10", "dataset.augment=basic", "dataset.image_size=8"]).dataset
    array = np.random.default_rng(0).integers(0, 256, size=(3, 10, 10, 3), dtype=np.uint8)
    train = ImagePixels(None, [0, 1, 2], None, cfg, train=True, array=array, rows=[0, 1, 2])
    pictures = [as_stored(train, 2, [0.5], [0.5]) for _ in range(2)]
    assert (pictures[0] == pictures[1]).all() and (pictures[0] == array[2] / 255).all()


def test_the_class_table_flags_empty_and_doubled_classes():
    """300 classes whose labels were cast to uint8: 256..299 wrap onto 0..43, which hold twice the others."""
    from runner.checks.data_report import class_table

    setup = setup_for(compose_config(["dataset=synthetic", "dataset.num_classes=300", "dataset.image_size=4",
                                      "dataset.train_size=6000", "dataset.val_size=300", "dataset.test_size=300"]),
                      torch.device("cpu"))
    for split in ("train", "val"):
        x, y = setup.splits[split].tensors
        setup.splits[split] = TensorDataset(x, y.to(torch.uint8).long())
    rows = {int(line.split("|")[1]): line for line in class_table(setup, [str(c) for c in range(300)])
            if line.startswith("| ") and line.split("|")[1].strip().isdigit()}
    assert "empty in train" in rows[299] and "empty in train" in rows[256], rows[299]
    assert "2.0x the median in train" in rows[0] and "2.0x" in rows[43], rows[0]
    assert "empty" not in rows[100] and "median" not in rows[100]
    assert "empty in val" in rows[299] and "median in val" not in rows[0]  # 2 against 1: within a small count's noise


@pytest.mark.parametrize("augment", ["basic", "none"])
def test_the_report_says_when_the_augmentation_mirrors_classes_that_change_when_mirrored(augment, caplog):
    """In report.md and, as a warning, on the console and in inspect_data.log (only in report.md before: an
    adversarial tester saw a silent command)."""
    import logging

    from runner.checks.data_report import augmentation_note

    setup = setup_for(compose_config([f"dataset.augment={augment}"]), torch.device("cpu"))  # digits
    with caplog.at_level(logging.WARNING, logger="runner.inspect_data"):
        said = " ".join(augmentation_note(setup))
    assert ("dataset.augment=basic mirrors images" in said) == (augment == "basic"), said
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (len(warned) == 1 and "dataset.augment=basic mirrors images" in warned[0]) == (augment == "basic"), warned
