"""Datasets: real splits, seeded miniatures, worker-independent augmentation, clear missing-data errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from runner.common.errors import UserError
from runner.config.schema import validate
from runner.data import datasets, introspect, loaders
from runner.data.settings import validate as validate_dataset
from tests.conftest import BAD_IMAGES, ODD_IMAGES, compose_config, make_bad_image


def dataset_cfg(*overrides):
    return compose_config(list(overrides)).dataset


def as_tensor(dataset):
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return torch.stack(xs), torch.as_tensor(ys)


def test_digits_is_the_real_bundled_data_split_without_overlap():
    splits = datasets.build_splits(dataset_cfg())
    assert [len(splits[s]) for s in datasets.SPLITS] == [1079, 359, 359]
    x, y = as_tensor(splits["train"])
    assert x.shape[1:] == (1, 8, 8) and set(y.tolist()) == set(range(10))
    assert abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1) < 0.1  # standardized
    index = datasets.seeded_split(1797, (0.2, 0.2), seed=0)
    assert sorted(index["train"] + index["val"] + index["test"]) == list(range(1797))  # each sample once


def test_subset_is_fixed_and_identical_across_builds():
    first = datasets.build_splits(dataset_cfg("dataset.subset=64"))
    second = datasets.build_splits(dataset_cfg("dataset.subset=64"))
    for split in datasets.SPLITS:
        assert len(first[split]) == 64
        assert torch.equal(as_tensor(first[split])[0], as_tensor(second[split])[0])


def test_a_subset_is_stratified_the_same_count_per_class_as_far_as_possible():
    splits = datasets.build_splits(dataset_cfg("dataset.subset=64"))
    for split in datasets.SPLITS:
        counts = torch.bincount(introspect.labels_of(splits[split]), minlength=10)
        assert counts.sum() == 64 and counts.max() - counts.min() <= 1, (split, counts.tolist())
    rare = torch.tensor([0] * 3 + [1] * 50 + [2] * 50)  # a class with fewer samples than its share
    picked = datasets.subset(torch.utils.data.TensorDataset(torch.zeros(103, 1), rare), 30, 0, "train")
    assert torch.bincount(rare[picked.indices]).tolist() == [3, 14, 13] or \
        torch.bincount(rare[picked.indices]).tolist() == [3, 13, 14]


def test_synthetic_takes_prime_shapes():
    splits = datasets.build_splits(dataset_cfg("dataset=synthetic", "dataset.num_classes=7", "dataset.channels=3",
                                           "dataset.image_size=[11,13]", "dataset.train_size=21"))
    x, y = as_tensor(splits["train"])
    assert x.shape == (21, 3, 11, 13)
    assert sorted(y.tolist()) == sorted(list(range(7)) * 3)


def epoch_batches(dataset, num_workers, epoch, seed=0):
    loader, sampler = loaders.train_loader(dataset, 5, seed, num_workers, pin_memory=False)
    sampler.set_epoch(epoch)
    return [x for x, _ in loader]


def test_augmentation_depends_on_seed_and_epoch_not_on_workers():
    train = datasets.build_splits(dataset_cfg("dataset=synthetic", "dataset.image_size=[12,12]",
                                          "dataset.train_size=20", "dataset.augment=basic"))["train"]
    in_process = epoch_batches(train, 0, epoch=3)
    with_workers = epoch_batches(train, 2, epoch=3)
    assert all(torch.equal(a, b) for a, b in zip(in_process, with_workers, strict=True))
    other_epoch = epoch_batches(train, 0, epoch=4)
    assert not all(torch.equal(a, b) for a, b in zip(in_process, other_epoch, strict=True))


def test_flowers102_loads_official_splits_through_torchvision(flowers_root):
    splits = datasets.build_splits(dataset_cfg("dataset=flowers102", f"dataset.root={flowers_root}",
                                           "dataset.download=false"))
    assert [len(splits[s]) for s in datasets.SPLITS] == [1020, 1020, 6149]
    x, y = splits["train"][0]
    assert x.shape == (3, 128, 128) and 0 <= y < 102
    train_labels = introspect.labels_of(splits["train"]).tolist()
    assert sorted(set(train_labels)) == list(range(102))  # the official train split: 10 per class
    assert all(train_labels.count(c) == 10 for c in range(102))


def test_flowers102_missing_names_the_folder_and_the_files(tmp_path):
    cfg = dataset_cfg("dataset=flowers102", f"dataset.root={tmp_path}", "dataset.download=false")
    with pytest.raises(UserError) as caught:
        datasets.build_splits(cfg)
    message = str(caught.value)
    assert str(tmp_path / "flowers-102") in message
    assert "imagelabels.mat, setid.mat and jpg/" in message and "dataset.download=true" in message


def test_flowers102_failed_download_says_what_to_do(tmp_path, monkeypatch):
    from urllib.error import URLError

    import torchvision.datasets.flowers102 as module

    def offline(*args, **kwargs):
        raise URLError("no internet")

    monkeypatch.setattr(module, "download_and_extract_archive", offline)
    cfg = dataset_cfg("dataset=flowers102", f"dataset.root={tmp_path}", "dataset.download=true")
    with pytest.raises(UserError, match=r"could not download Flowers-102 into .*flowers-102 .*no internet"):
        datasets.build_splits(cfg)


def make_image_folder(root, classes=3, per_class=10, size=(9, 7)):
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"class_{c}" / f"{i}.png")


def test_imagefolder_seeded_split(tmp_path):
    make_image_folder(tmp_path)
    cfg = dataset_cfg("dataset=imagefolder", f"dataset.root={tmp_path}", "dataset.num_classes=3",
                      "dataset.image_size=[8,8]")
    splits = datasets.build_splits(cfg)
    assert [len(splits[s]) for s in datasets.SPLITS] == [24, 6, 0]
    assert splits["train"][0][0].shape == (3, 8, 8)
    files = {split: introspect.image_files(splits[split]) for split in ("train", "val")}
    assert files["val"] == introspect.image_files(datasets.build_splits(cfg)["val"])  # seeded: the same files
    assert not set(files["train"]) & set(files["val"])


def test_imagefolder_class_count_mismatch(tmp_path):
    make_image_folder(tmp_path)
    cfg = dataset_cfg("dataset=imagefolder", f"dataset.root={tmp_path}", "dataset.num_classes=5")
    with pytest.raises(UserError, match=r"dataset.num_classes=5 but .* has 3 class folders. Fix: dataset.num_classes=3"):
        datasets.build_splits(cfg)


def test_a_corrupted_image_is_named_with_the_fix(tmp_path):
    make_image_folder(tmp_path)
    good = (tmp_path / "class_0" / "0.png").read_bytes()
    (tmp_path / "class_0" / "0.png").write_bytes(good[: len(good) // 3])
    cfg = dataset_cfg("dataset=imagefolder", f"dataset.root={tmp_path}", "dataset.num_classes=3",
                      "dataset.image_size=[8,8]")
    splits = datasets.build_splits(cfg)
    with pytest.raises(UserError, match=r"class_0/0.png cannot be decoded as an image .* Fix: replace or remove it"):
        for dataset in splits.values():
            for i in range(len(dataset)):
                dataset[i]


def test_a_decompression_bomb_is_named_like_any_bad_image(tmp_path, monkeypatch):
    """PIL raises DecompressionBombError (not an OSError) for an image of too many pixels."""
    from PIL import Image

    from runner.data.transforms import load_image

    path = tmp_path / "huge.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 64x64 is then more than twice the limit: a "bomb"
    with pytest.raises(UserError, match=r"huge.png cannot be decoded as an image .*pixels.* Fix: replace or remove it"):
        load_image(path)


def folder_with(tmp_path, kinds) -> tuple[object, dict]:
    """make_image_folder plus one file of each kind in class_1 (bad_images=raise unless overridden)."""
    make_image_folder(tmp_path)
    files = {kind: make_bad_image(tmp_path / "class_1" / f"odd_{kind.replace(' ', '_')}.jpg", kind) for kind in kinds}
    return dataset_cfg("dataset=imagefolder", f"dataset.root={tmp_path}", "dataset.num_classes=3",
                       "dataset.image_size=[8,8]"), files


@pytest.mark.parametrize("kind", [k for k in BAD_IMAGES if k != "truncated"])
def test_a_file_that_is_no_image_stops_the_run_before_training_naming_it(kind, tmp_path):
    cfg, files = folder_with(tmp_path, [kind])
    with pytest.raises(UserError, match=rf"{files[kind].name} cannot be decoded as an image .* "
                                        r"Fix: replace or remove it, or set dataset.bad_images=skip"):
        datasets.build_splits(cfg)


def test_a_truncated_file_is_named_when_it_is_read_with_the_skip_setting_as_fix(tmp_path):
    cfg, files = folder_with(tmp_path, ["truncated"])
    splits = datasets.build_splits(cfg)  # its header reads: found only by decoding, which raise does not do up front
    with pytest.raises(UserError, match=r"odd_truncated.jpg cannot be decoded .*dataset.bad_images=skip"):
        for dataset in splits.values():
            for i in range(len(dataset)):
                dataset[i]


def test_skip_leaves_out_exactly_the_files_that_do_not_decode_the_same_way_every_time(tmp_path):
    cfg, files = folder_with(tmp_path, [*BAD_IMAGES, *ODD_IMAGES])
    cfg.bad_images, cfg.image_size = "skip", [6, 6]
    splits, screening = datasets.build_screened_splits(cfg)
    assert sorted(path for path, _ in screening.skipped) == sorted(files[k] for k in BAD_IMAGES)
    used = [f for ds in splits.values() for f in introspect.image_files(ds)]
    assert len(used) == 30 + len(ODD_IMAGES) and not set(used) & {files[k] for k in BAD_IMAGES}
    assert [introspect.image_files(ds) for ds in datasets.build_splits(cfg).values()] == \
        [introspect.image_files(ds) for ds in splits.values()]
    for dataset in splits.values():  # every sample left in decodes
        for i in range(len(dataset)):
            dataset[i]
    assert screening.summary() == {"skipped": 4, "converted": {"CMYK": 1, "L": 1}, "rotated": 0, "upscaled": 1}


def test_converted_images_are_counted_and_reported_once(tmp_path, caplog):
    cfg, _ = folder_with(tmp_path, ODD_IMAGES)
    cfg.image_size = [16, 16]
    with caplog.at_level("INFO"):
        _, screening = datasets.build_screened_splits(cfg)
    assert screening.summary() == {"skipped": 0, "converted": {"CMYK": 1, "L": 1}, "rotated": 0, "upscaled": 31}
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("images:")]
    assert lines == ["images: converted 1 CMYK (CMYK), 1 grayscale (L); 31 smaller than the image size (enlarged)"]


def test_bad_images_is_a_setting_of_file_datasets_only():
    with pytest.raises(Exception, match="bad_images"):
        dataset_cfg("dataset.bad_images=skip")  # digits: no files
    with pytest.raises(UserError, match=r"dataset.bad_images='drop' is not known. Fix: dataset.bad_images=raise\|skip"):
        validate_dataset(dataset_cfg("dataset=flowers102", "dataset.bad_images=drop"))


@pytest.mark.parametrize("layout", ["flat", "train_val"])
def test_imagefolder_counts_its_classes_from_the_folders(tmp_path, layout):
    make_image_folder(tmp_path / "train" if layout == "train_val" else tmp_path, classes=4)
    if layout == "train_val":
        make_image_folder(tmp_path / "val", classes=4)
    cfg = compose_config(["dataset=imagefolder", f"dataset.root={tmp_path}", "dataset.image_size=[8,8]"])
    validate(cfg)
    assert cfg.dataset.num_classes == 4 and cfg.model.num_classes == 4
    assert len(datasets.build_splits(cfg.dataset)["train"]) == 40 if layout == "train_val" else 32


def test_the_one_pass_standardization_equals_torchvisions_to_tensor_then_normalize():
    from torchvision import transforms as tv

    from runner.data.transforms import Standardize

    rng = np.random.default_rng(0)
    for mode, mean, std in (("RGB", [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]), ("L", [0.5], [0.25])):
        channels = 3 if mode == "RGB" else 1
        pixels = rng.integers(0, 256, size=(37, 53, channels), dtype=np.uint8)
        image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)
        expected = tv.Normalize(mean, std)(tv.ToTensor()(image))
        torch.testing.assert_close(Standardize(mean, std)(image), expected, rtol=0, atol=1e-6)


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_that_still_covers_the_training_size(tmp_path):
    from runner.data.transforms import load_image

    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, size=(30, 40, 3)), np.ones((20, 20, 1))).astype(np.uint8)  # 600x800
    path = tmp_path / "photo.jpg"
    Image.fromarray(smooth).save(path, quality=90)
    full, drafted = load_image(path), load_image(path, draft=(128, 128))
    assert full.size == (800, 600) and drafted.size == (200, 150)  # 1/4 scale: the smallest that covers 128x128
    assert load_image(path, draft=(256, 256)).size == (400, 300)  # 1/2 scale covers 256x256
    as_array = [np.asarray(image.resize((128, 128), Image.BILINEAR), dtype=float) for image in (full, drafted)]
    assert np.abs(as_array[0] - as_array[1]).mean() < 4  # of 255: the same picture at the training size
