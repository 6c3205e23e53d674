"""Data that is not what it seems (issue 21, items 10-14 and the data parts of 18): files rotated by their
EXIF orientation, 16-bit images, class folders that differ between splits, labels and tensors that do not
fit the config, and messages that point the right way."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from runner.common.errors import UserError
from runner.data import datasets
from runner.data.image_files import image_files
from tests.conftest import compose_config, make_imagefolder

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
    assert lines == ["images: 8 rotated upright by their EXIF orientation"]


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


# item 11: 16-bit images -------------------------------------------------------------------------------------

RAMP = np.linspace(0, 65535, 256).round().astype(np.uint16)[None].repeat(8, axis=0)  # 8 x 256, 0..65535


def ramp_folder(root):
    """Each class: a 16-bit grayscale ramp (PNG, mode I;16) and the same ramp as an 8-bit PNG, for comparison."""
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            Image.fromarray(RAMP).save(root / split / c / "deep.png")
            Image.fromarray((RAMP.astype(np.uint32) * 255 // 65535).astype(np.uint8)).save(root / split / c / "flat.png")
    assert Image.open(root / "train" / "a" / "deep.png").mode == "I;16"
    return root


@pytest.mark.parametrize("channels", [3, 1])
def test_a_16_bit_ramp_is_scaled_to_8_bits_not_clipped(tmp_path, monkeypatch, channels, caplog):
    from runner.data.transforms import load_image

    monkeypatch.setenv("RUNNER_CACHE", str(tmp_path / "cache"))
    root = ramp_folder(tmp_path / "images")
    mean = "[0.5]" if channels == 1 else "[0.5,0.5,0.5]"
    for cache in ("none", "disk"):
        cfg = folder_cfg(root, "dataset.image_size=[8,64]", f"dataset.channels={channels}", f"dataset.mean={mean}",
                         f"dataset.std={mean}", f"dataset.cache={cache}")
        with caplog.at_level("INFO"):
            splits, screening = datasets.build_screened_splits(cfg)
        files = image_files(splits["train"])
        deep = splits["train"].pixels(files.index(root / "train" / "a" / "deep.png")).numpy().astype(int)
        flat = splits["train"].pixels(files.index(root / "train" / "a" / "flat.png")).numpy().astype(int)
        assert (deep == 255).mean() < 0.05, (cache, (deep == 255).mean())  # not 97% white
        assert np.abs(deep - flat).max() <= 1, cache  # the same picture as its 8-bit copy
    assert screening.converted["I;16"] == 4
    assert "converted 4 16-bit grayscale, scaled to 8 bits (I;16)" in caplog.text
    shown = np.asarray(load_image(root / "train" / "a" / "deep.png"))  # what the data report shows
    assert np.abs(shown[..., 0].astype(int) - np.asarray(Image.open(root / "train" / "a" / "flat.png"))).max() <= 1


def ramp_images(num_classes: int) -> dict:
    """A custom dataset of 16-bit PIL images (mode I;16)."""
    image = Image.fromarray(RAMP)
    split = [(image, c % num_classes) for c in range(8)]
    return {"train": split, "val": split}


def test_a_custom_datasets_16_bit_pil_images_are_scaled_too():
    cfg = compose_config(["dataset=custom", "dataset._target_=tests.test_data_seams.ramp_images",
                          "dataset.num_classes=2", "dataset.image_size=[8,256]"]).dataset
    x, _ = datasets.build_splits(cfg)["train"][0]
    pixels = x * 0.5 + 0.5  # dataset.mean=[0.5], std=[0.5]
    assert float((pixels > 0.999).float().mean()) < 0.05 and abs(float(pixels.mean()) - 0.5) < 0.02


def test_a_float_image_file_is_refused_in_one_line(tmp_path):
    root = ramp_folder(tmp_path / "images")
    Image.fromarray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)).save(root / "train" / "a" / "f.tif")
    cfg = folder_cfg(root, "dataset.image_size=[8,8]")
    with pytest.raises(UserError, match=r"f.tif has 32-bit float pixels \(PIL mode F\), of no known range; 1 such "
                                        r"file\(s\) in the dataset\. Fix: save it as an 8-bit or 16-bit image"):
        datasets.build_splits(cfg)
    cfg.bad_images = "skip"
    splits, screening = datasets.build_screened_splits(cfg)
    assert [path.name for path, _ in screening.skipped] == ["f.tif"]


# item 12: ImageFolder class names matched between splits ------------------------------------------------------

def class_tree(root, layout: dict[str, list[str]], per_class: int = 3):
    """root/SPLIT/CLASS/N.png for each split's classes (an empty list of images where the class ends in '!')."""
    rng = np.random.default_rng(0)
    for split, classes in layout.items():
        for name in classes:
            folder = root / split / name.rstrip("!")
            folder.mkdir(parents=True)
            for n in range(0 if name.endswith("!") else per_class):
                Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(folder / f"{n}.png")
    return root


def imagefolder_splits(root):
    """As a run builds them: the composed config (num_classes counted from the folders), validated."""
    from runner.config.schema import validate

    cfg = compose_config(["dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=[8,8]"])
    validate(cfg)
    return datasets.build_splits(cfg.dataset)


@pytest.mark.parametrize(("layout", "said"), [
    ({"train": ["apple", "banana", "cherry"], "val": ["apple", "cherry", "durian"]},
     r"val lacks class folder banana that .*train has, and has durian that .*train lacks \(classes are matched "
     r"between splits by folder name\)\. Fix: add .*val/banana with images of that class \(or remove .*train/banana\); "
     r"remove .*val/durian \(or add .*train/durian with training images\)"),
    ({"train": ["apple", "banana", "cherry"], "val": ["apple", "cherry"]},
     r"val lacks class folder banana that .*train has \(classes .*\)\. Fix: add .*val/banana with images of that class"),
    ({"train": ["apple", "banana"], "val": ["apple", "banana"], "test": ["apple", "banana", "kiwi"]},
     r"test has class folder kiwi that .*train lacks .* Fix: remove .*test/kiwi"),
])
def test_imagefolder_splits_whose_class_names_differ_are_refused_naming_the_folders(tmp_path, layout, said):
    root = class_tree(tmp_path / "fruit", layout)
    with pytest.raises(UserError, match=said) as caught:
        imagefolder_splits(root)
    assert "\n" not in str(caught.value) and "num_classes" not in str(caught.value)


@pytest.mark.parametrize("layout", [{"train": ["apple", "banana!", "cherry"], "val": ["apple", "banana", "cherry"]},
                                    {"": ["apple", "banana!", "cherry"]}])
def test_an_empty_class_folder_is_named_as_the_cause(tmp_path, layout):
    root = class_tree(tmp_path / "fruit", layout)
    (root / next(iter(layout)) / "banana" / "notes.txt").write_text("not an image")
    with pytest.raises(UserError, match=r"class folder .*banana holds no image file \(1 file, none ending in .jpg, "
                                        r".*\)\. Fix: put the images of class banana into it, or remove the folder") as caught:
        imagefolder_splits(root)
    assert "dataset.root=FOLDER" not in str(caught.value)


def test_imagefolder_splits_with_the_same_class_names_load_with_the_same_labels(tmp_path):
    from runner.data import introspect

    root = class_tree(tmp_path / "fruit", {"train": ["apple", "banana"], "val": ["apple", "banana"]})
    splits = imagefolder_splits(root)
    for split in ("train", "val"):
        files, labels = image_files(splits[split]), introspect.labels_of(splits[split]).tolist()
        assert [["apple", "banana"][y] for y in labels] == [f.parent.name for f in files]


# item 13: labels that are not what the model needs --------------------------------------------------------------

def tensor_split(labels, size: int = 8, side: int = 8, channels: int = 3, nan_at=()):
    images = torch.randn(len(labels), channels, side, side, generator=torch.Generator().manual_seed(0))
    for index in nan_at:
        images[index, 0, 1, 2] = float("nan")
    return torch.utils.data.TensorDataset(images, torch.as_tensor(labels))


class NamesAsLabels(torch.utils.data.Dataset):
    """`labels` holding the class names, not one label per sample: the items' labels are the ones."""

    labels = ["cat", "dog"]

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return torch.zeros(3, 8, 8), index % 2


def names_as_labels(num_classes: int) -> dict:
    return {"train": NamesAsLabels(), "val": NamesAsLabels()}


class WithTargets(torch.utils.data.Dataset):
    """A user's dataset keeping its labels apart, torchvision's way (`targets`)."""

    def __init__(self, labels):
        self.targets = list(labels)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        return torch.zeros(3, 8, 8), self.targets[index]


def float_labels(num_classes: int) -> dict:
    return {"train": tensor_split([0.7, 1.7, 0.2, 1.0]), "val": tensor_split([0, 1, 0, 1])}


def float_targets(num_classes: int) -> dict:
    return {"train": WithTargets([0, 1, 0, 1]), "val": WithTargets([0.0, 1.0, 0.5, 1.0])}


def whole_float_labels(num_classes: int) -> dict:
    return {"train": tensor_split([0.0, 1.0, 0.0, 1.0]), "val": WithTargets(np.array([0.0, 1.0, 1.0]))}


def one_hot_labels(num_classes: int) -> dict:
    return {"train": [(torch.zeros(3, 8, 8), torch.tensor([0.0, 1.0]))] * 4, "val": tensor_split([0, 1])}


def string_labels(num_classes: int) -> dict:
    return {"train": [(torch.zeros(3, 8, 8), "cat")] * 4, "val": tensor_split([0, 1])}


def too_high_in_train(num_classes: int) -> dict:
    return {"train": tensor_split([0, 1, 2, 1]), "val": tensor_split([0, 1])}


def negative_in_train(num_classes: int) -> dict:
    return {"train": tensor_split([0, -1, 1, 1]), "val": tensor_split([0, 1])}


def numbered_from_one(num_classes: int) -> dict:
    return {"train": tensor_split([1, 2, 1, 2]), "val": tensor_split([1, 2])}


def too_high_in_val_only(num_classes: int) -> dict:
    return {"train": tensor_split([0, 1, 0, 1]), "val": tensor_split([0, 1, 5, 1]), "test": tensor_split([0, 1])}


def too_high_in_test_only(num_classes: int) -> dict:
    return {"train": tensor_split([0, 1, 0, 1]), "val": WithTargets([0, 1]), "test": WithTargets([0, 1, 1, 2])}


def custom_cfg(target: str, *overrides):
    return compose_config(["dataset=custom", f"dataset._target_=tests.test_data_seams.{target}", "dataset.num_classes=2",
                           "dataset.image_size=[8,8]", *overrides]).dataset


@pytest.mark.parametrize(("target", "said"), [
    ("float_labels", r"tests.test_data_seams.float_labels returned a train split whose label 0 is 0.7, not a whole "
                     r"class number .*Fix: return integer class numbers 0..1 as labels"),
    ("float_targets", r"returned a val split whose label 2 is 0.5, not a whole class number"),
    ("one_hot_labels", r"returned a train split whose label 0 is a Tensor of shape \(2,\), not one class number "
                       r"\(one-hot or soft labels\?\)\. Fix: return integer class numbers 0..1"),
    ("string_labels", r"returned a train split whose label 0 is 'cat', not a whole class number"),
    ("too_high_in_train", r"the train split of dataset custom has 1 label outside 0..1 \(dataset.num_classes=2\): "
                          r"sample 2 is 2; its labels run 0..2\. Fix: dataset.num_classes=3 if there are 3 classes, "
                          r"else number the classes 0..1"),
    ("negative_in_train", r"the train split .* sample 1 is -1; its labels run -1..1\. Fix: leave the samples without "
                          r"a class out of the split; labels are class numbers 0..1"),
    ("numbered_from_one", r"the train split .*its labels run 1..2\. Fix: number the classes from 0 \(these look "
                          r"numbered from 1: subtract 1\), or dataset.num_classes=3"),
    ("too_high_in_val_only", r"the val split of dataset custom has 1 label outside 0..1 .* sample 2 is 5"),
    ("too_high_in_test_only", r"the test split of dataset custom has 1 label outside 0..1 .* sample 3 is 2"),
])
def test_labels_are_checked_in_every_split_at_start_in_one_line(target, said):
    with pytest.raises(UserError, match=said) as caught:
        datasets.build_splits(custom_cfg(target))
    assert "\n" not in str(caught.value)


def test_whole_float_labels_are_class_numbers():
    splits = datasets.build_splits(custom_cfg("whole_float_labels"))
    assert [splits["train"][i][1] for i in range(4)] == [0, 1, 0, 1] and splits["val"].targets == [0, 1, 1]
    assert datasets.build_splits(custom_cfg("names_as_labels"))["train"].targets == [0, 1, 0, 1]


def test_a_bad_validation_label_stops_a_run_before_training(tmp_path):
    from runner.run import train_and_evaluate as train_job

    cfg = compose_config(["dataset=custom", "dataset._target_=tests.test_data_seams.too_high_in_val_only",
                          "dataset.num_classes=2", "dataset.image_size=[8,8]", "trainer.epochs=1",
                          "trainer.batch_size=4", "trainer.micro_batch_size=4"])
    with pytest.raises(UserError, match=r"the val split .* sample 2 is 5"):
        train_job(cfg, tmp_path / "run")
    assert not list((tmp_path / "run").glob("checkpoints/*.pt"))


def nan_in_val(num_classes: int) -> dict:
    return {"train": tensor_split([0, 1, 0, 1]), "val": tensor_split([0, 1, 0, 1, 0, 1], nan_at=(1, 4))}


class NanOnRead(WithTargets):
    def __getitem__(self, index):
        image = torch.zeros(3, 8, 8)
        image[0, 0, 0] = float("nan") if index == 2 else 0.0
        return image, self.targets[index]


def nan_in_val_with_targets(num_classes: int) -> dict:
    return {"train": tensor_split([0, 1, 0, 1]), "val": NanOnRead([0, 1, 0, 1])}


def test_nan_in_a_validation_image_names_the_samples():
    with pytest.raises(UserError, match=r"returned a val split with NaN or inf in 2 images \(samples 1, 4\)\. Fix: "
                                        r"replace those values, or leave those samples out"):
        datasets.build_splits(custom_cfg("nan_in_val"))
    splits = datasets.build_splits(custom_cfg("nan_in_val_with_targets"))  # images not read at start: named when read
    splits["val"][1]
    with pytest.raises(UserError, match=r"returned a val split whose image 2 holds NaN or inf\. Fix: replace those"):
        splits["val"][2]


def missing_class_in_train(num_classes: int) -> dict:
    return {"train": tensor_split([0, 1, 0, 1]), "val": tensor_split([0, 1, 2, 1])}


def test_classes_without_a_training_sample_are_named(caplog):
    with caplog.at_level("WARNING"):
        datasets.build_splits(custom_cfg("missing_class_in_train", "dataset.num_classes=4"))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("class 2 has no training sample but is in the val split: the model cannot learn it" in w
               for w in warnings), warnings
    assert any("dataset.num_classes=4 but no split has a sample of class 3" in w for w in warnings), warnings


# item 14: tensors whose shape is not what the config builds the model for ----------------------------------------

def sized(train=(3, 12, 12), val=(3, 12, 12), odd_train_sample=None):
    def split(shape, n=4):
        return [(torch.zeros(shape) if i != odd_train_sample else torch.zeros(3, 9, 9), i % 2) for i in range(n)]
    return {"train": split(train), "val": split(val)}


def twelve(num_classes: int) -> dict:
    return sized()


def twelve_val_sixteen(num_classes: int) -> dict:
    return sized(val=(3, 16, 16))


def gray(num_classes: int) -> dict:
    return sized(train=(1, 12, 12), val=(1, 12, 12))


def channels_last(num_classes: int) -> dict:
    return sized(train=(12, 12, 3), val=(12, 12, 3))


def no_channel_dim(num_classes: int) -> dict:
    return sized(train=(12, 12), val=(12, 12))


def one_odd_train_sample(num_classes: int) -> dict:
    return sized(odd_train_sample=2)


def shaped_cfg(target: str, *overrides):
    return compose_config(["dataset=custom", f"dataset._target_=tests.test_data_seams.{target}", "dataset.num_classes=2",
                           *overrides]).dataset


@pytest.mark.parametrize(("target", "overrides", "said"), [
    ("twelve", [], r"returned a train split whose image 0 is a 3x12x12 tensor, but the model is built for 3x32x32 "
                   r"\(dataset.channels=3, dataset.image_size=\[32,32\]; tensors are used as they are\)\. "
                   r"Fix: dataset.image_size=\[12,12\]"),
    ("twelve_val_sixteen", ["dataset.image_size=[12,12]"],
     r"returned a val split whose image 0 is a 3x16x16 tensor, but the model is built for 3x12x12 .*\. Fix: return "
     r"images of one shape in every split \(3x12x12, as the train split's\), or PIL images, which runner resizes"),
    ("gray", ["dataset.image_size=[12,12]"], r"train split whose image 0 is a 1x12x12 tensor, but the model is built "
                                             r"for 3x12x12 .*Fix: dataset.channels=1"),
    ("gray", [], r"Fix: dataset.channels=1 dataset.image_size=\[12,12\]"),
    ("channels_last", ["dataset.image_size=[12,12]"],
     r"image 0 is a 12x12x3 tensor, .* Fix: return \(channels, height, width\) tensors: image.permute\(2, 0, 1\)"),
    ("no_channel_dim", ["dataset.image_size=[12,12]", "dataset.channels=1"],
     r"image 0 is a 12x12 tensor, .* Fix: return \(channels, height, width\) tensors: image.unsqueeze\(0\)"),
])
def test_tensors_of_another_shape_than_the_config_are_refused_at_start_naming_both(target, overrides, said):
    with pytest.raises(UserError, match=said) as caught:
        datasets.build_splits(shaped_cfg(target, *overrides))
    assert "\n" not in str(caught.value)


def test_a_later_sample_of_another_shape_is_named_when_read():
    splits = datasets.build_splits(shaped_cfg("one_odd_train_sample", "dataset.image_size=[12,12]"))
    assert splits["train"][1][0].shape == (3, 12, 12)
    with pytest.raises(UserError, match=r"train split whose image 2 is a 3x9x9 tensor, .* Fix: return images of one "
                                        r"shape in every split \(3x12x12"):
        splits["train"][2]


def test_the_config_is_not_trusted_over_any_dataset():
    """The same rule for runner's own datasets: digits' images are 1x8x8 whatever dataset.image_size says."""
    cfg = compose_config(["dataset.image_size=[16,16]"]).dataset  # digits
    with pytest.raises(UserError, match=r"the train split of dataset digits gives images of 1x8x8, but the model is "
                                        r"built for 1x16x16 .*Fix: dataset.image_size=\[8,8\]"):
        datasets.build_splits(cfg)


def test_a_custom_run_with_tensors_of_the_configured_shape_trains(tmp_path):
    from runner.run import train_and_evaluate as train_job

    cfg = compose_config(["dataset=custom", "dataset._target_=tests.test_data_seams.twelve", "dataset.num_classes=2",
                          "dataset.image_size=[12,12]", "trainer.epochs=1", "trainer.batch_size=4",
                          "trainer.micro_batch_size=4", "evaluate.after_training=false"])
    train_job(cfg, tmp_path / "run")
    assert list((tmp_path / "run").glob("checkpoints/*.pt"))


# item 18 (data): messages that send the user the right way --------------------------------------------------------

@pytest.fixture
def offline(monkeypatch):
    """torchvision's download as it fails without internet: after it has made its folder."""
    from urllib.error import URLError

    import torchvision.datasets.utils as utils

    def no_internet(*args, **kwargs):
        raise URLError("no internet")

    monkeypatch.setattr(utils, "_is_remote_location_available", lambda: False)
    monkeypatch.setattr(utils, "_get_redirect_url", no_internet)


def test_a_failed_flowers_download_names_the_folder_above_flowers_102_and_leaves_no_empty_folder(tmp_path, offline):
    cfg = compose_config(["dataset=flowers102", f"dataset.root={tmp_path / 'data'}", "dataset.download=true"]).dataset
    with pytest.raises(UserError, match=r"could not download Flowers-102 into .*data/flowers-102 \(.*no internet.*\)\. "
                                        r"Fix: .*or set dataset.root=FOLDER whose flowers-102/ holds them") as caught:
        datasets.build_splits(cfg)
    assert "FOLDER that already holds them" not in str(caught.value)
    assert not (tmp_path / "data" / "flowers-102").exists() and not (tmp_path / "data").exists()


def test_a_failed_cifar_download_says_to_unpack_the_archive_in_the_root_not_inside_its_folder(tmp_path, offline):
    (tmp_path / "data").mkdir()
    cfg = compose_config(["dataset=cifar10", f"dataset.root={tmp_path / 'data'}", "dataset.download=true"]).dataset
    with pytest.raises(UserError, match=r"could not download CIFAR-10 into .*/data \(.*no internet.*\)\. Fix: .*put "
                                        r"cifar-10-python.tar.gz from .* into .*/data yourself and unpack it there \(it holds "
                                        r"cifar-10-batches-py/\), or set dataset.root=FOLDER whose cifar-10-batches-py/ "
                                        r"holds them") as caught:
        datasets.build_splits(cfg)
    assert "into " + str(tmp_path / "data" / "cifar-10-batches-py") not in str(caught.value)
    assert list((tmp_path / "data").iterdir()) == []


def test_data_one_folder_too_deep_or_too_shallow_names_the_root_to_set(tmp_path):
    from tests.conftest import make_cifar10

    make_cifar10(tmp_path / "twice" / "cifar-10-batches-py")  # unpacked inside the folder the archive makes
    cfg = compose_config(["dataset=cifar10", f"dataset.root={tmp_path / 'twice'}", "dataset.download=false"]).dataset
    with pytest.raises(UserError, match=r"CIFAR-10 not found in .*twice/cifar-10-batches-py: its files are one folder "
                                        r"deeper, in .*twice/cifar-10-batches-py/cifar-10-batches-py\. "
                                        r"Fix: dataset.root=.*twice/cifar-10-batches-py$"):
        datasets.build_splits(cfg)
    inside = tmp_path / "flowers" / "flowers-102"
    inside.mkdir(parents=True)
    (inside / "imagelabels.mat").write_bytes(b"")
    cfg = compose_config(["dataset=flowers102", f"dataset.root={inside}", "dataset.download=false"]).dataset
    with pytest.raises(UserError, match=r"Flowers-102 not found in .*flowers-102/flowers-102: dataset.root is the "
                                        r"flowers-102 folder itself\. Fix: dataset.root=.*/flowers$"):
        datasets.build_splits(cfg)


def flat_images(folder, n=4):
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((8, 8, 3), i * 40, dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.mark.parametrize(("layout", "said"), [
    ("one class's folder", r"dataset.root='.*/fruit/apple' holds 4 image files but no class folder: it looks like the "
                           r"folder of one class\. Fix: dataset.root=.*/fruit \(the folder whose subfolders are the "
                           r"classes\)"),
    ("one class folder", r"dataset.root='.*/fruit' holds one class folder \(apple\): a classifier needs two or more\. "
                         r"Fix: add a folder of images for each other class to .*/fruit"),
    ("one level too high", r"dataset.root='.*/outer' holds one class folder \(fruit\), which holds folders itself: "
                           r"the classes\? Fix: dataset.root=.*/outer/fruit"),
    ("train without val", r"dataset.root='.*/fruit' has train but no val: with split folders root/train and root/val "
                          r"are the splits .* Fix: add .*/fruit/val with the class folders of train"),
])
def test_an_imagefolder_root_of_the_wrong_level_says_where_the_class_folders_are(tmp_path, layout, said):
    from runner.config.schema import validate

    fruit = tmp_path / "outer" / "fruit" if layout == "one level too high" else tmp_path / "fruit"
    flat_images(fruit / "apple")
    if layout == "one level too high":
        flat_images(fruit / "banana")
    if layout == "train without val":
        for name in ("apple", "banana"):
            flat_images(fruit / "train" / name)
    root = {"one class's folder": fruit / "apple", "one level too high": tmp_path / "outer"}.get(layout, fruit)
    with pytest.raises(UserError, match=said) as caught:
        validate(compose_config(["dataset=imagefolder", f"dataset.root={root}"]))
    assert "num_classes" not in str(caught.value)


def test_hashing_a_split_of_image_files_lists_its_files_once_not_once_per_sample(tmp_path, monkeypatch):
    """The splits check hashed Flowers-102's 6149 test files in ~190 s: each sample listed the whole split's files
    again (quadratic). Hashing a split must list them once, and hash each file's bytes."""
    from runner.checks.data import content_hashes
    from runner.data import stored

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(7):
        Image.fromarray(np.full((5, 3, 3), i, np.uint8)).save(folder / f"{i}.png")
    dataset = torch.utils.data.Subset(type("Files", (), {"_image_files": sorted(folder.iterdir()),
                                                         "__len__": lambda self: 7})(), [6, 0, 3])
    listed = []
    real = stored.introspect.image_files
    monkeypatch.setattr(stored.introspect, "image_files", lambda d: listed.append(d) or real(d))
    hashes = content_hashes(dataset)
    assert hashes == [hashlib.sha1((folder / f"{i}.png").read_bytes()).hexdigest() for i in (6, 0, 3)]
    assert len(listed) == 1


def test_the_reports_plain_splits_carry_no_augmentation_of_any_kind(tmp_path):
    """The nearest-neighbour search compares the splits as evaluated: auto_augment and random_erasing off too
    (with them on, a training image drew a random op and erased box each time it was read)."""
    from runner.checks.report_views import unaugmented_splits

    root = make_imagefolder(tmp_path / "images", classes=2, per_class=4)
    cfg = compose_config(["dataset=imagefolder", f"dataset.root={root}", "dataset.num_classes=2",
                          "dataset.image_size=[16,16]", "dataset.augment=basic", "dataset.auto_augment=trivial",
                          "dataset.random_erasing=1.0"])
    train = unaugmented_splits(cfg)["train"]
    first, again = train[0][0], train[0][0]
    assert torch.equal(first, again)
