"""dataset.cache: decoded images kept between runs, rebuilt when the files change, exact resume kept."""

from __future__ import annotations

import os
import time

import pytest

from runner.common.errors import UserError
from runner.data import datasets
from runner.data.image_files import image_files
from runner.run import train_and_evaluate as train_job
from tests.conftest import assert_identical, checkpoint_weights, compose_config, make_imagefolder


@pytest.fixture
def images(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNNER_CACHE", str(tmp_path / "cache"))
    return make_imagefolder(tmp_path / "images", classes=3, per_class=8, size=(40, 52))


def folder_config(root, *overrides):
    return compose_config(["dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=[16,16]", *overrides])


def test_the_cache_is_built_once_and_matches_the_files(images, tmp_path):
    cached = datasets.build_splits(folder_config(images, "dataset.cache=disk").dataset)
    plain = datasets.build_splits(folder_config(images).dataset)
    built = list((tmp_path / "cache").glob("*.npy"))
    assert len(built) == 1 and not list((tmp_path / "cache").glob(".*tmp-*"))
    first_write = built[0].stat().st_mtime_ns
    for split in ("train", "val"):
        assert len(cached[split]) == len(plain[split])
        for i in range(len(plain[split])):
            a, b = cached[split][i], plain[split][i]
            assert a[1] == b[1] and a[0].shape == b[0].shape
            assert (a[0] - b[0]).abs().mean() < 0.1  # resized twice instead of once: nearly the same pixels
    time.sleep(0.01)
    datasets.build_splits(folder_config(images, "dataset.cache=memory").dataset)
    assert [p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("*.npy")] == [first_write]  # read, not rebuilt


def test_a_changed_file_makes_a_new_cache(images, tmp_path):
    datasets.build_splits(folder_config(images, "dataset.cache=disk").dataset)
    changed = next((images / "class_1").iterdir())
    changed.write_bytes(next((images / "class_2").iterdir()).read_bytes())
    os.utime(changed, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    splits = datasets.build_splits(folder_config(images, "dataset.cache=disk").dataset)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2  # a new key: the stale array is never read
    plain = datasets.build_splits(folder_config(images).dataset)
    split = next(s for s in ("train", "val") if changed in image_files(plain[s]))
    index = image_files(plain[split]).index(changed)
    assert (splits[split][index][0] - plain[split][index][0]).abs().mean() < 0.1  # the new pixels


@pytest.mark.parametrize("cache", ["disk", "device", "none"])
def test_training_from_the_cache_resumes_bit_identical(images, tmp_path, cache):
    common = ["trainer.batch_size=6", "trainer.micro_batch_size=3", "trainer.deterministic=true", "model.dropout=0.3",
              "dataset.augment=basic", f"dataset.cache={cache}", "checkpoint.every_epochs=1", "evaluate.after_training=false"]
    train_job(folder_config(images, *common, "trainer.epochs=2"), tmp_path / "resumed")
    train_job(folder_config(images, *common, "trainer.epochs=3"), tmp_path / "resumed")
    train_job(folder_config(images, *common, "trainer.epochs=3"), tmp_path / "straight")
    assert_identical(checkpoint_weights(tmp_path / "straight", 3), checkpoint_weights(tmp_path / "resumed", 3))


def test_every_cache_trains_the_same_weights_with_any_number_of_workers(images, tmp_path):
    """none (decoded by the workers), disk (mapped), memory and device (batches gathered without a loader)
    feed the same uint8 pixels to the same batch finishing: bit-identical weights, with 0 or 2 workers."""
    common = ["trainer.batch_size=6", "trainer.micro_batch_size=3", "trainer.deterministic=true", "trainer.epochs=2",
              "dataset.augment=basic", "evaluate.after_training=false", "model=convnet", "model.channels=8", "model.n_blocks=2"]
    for name, extra in (("disk", ["dataset.cache=disk"]), ("none", []), ("memory", ["dataset.cache=memory"]),
                        ("device", ["dataset.cache=device"]), ("workers", ["dataset.cache=disk", "trainer.num_workers=2"])):
        train_job(folder_config(images, *common, *extra), tmp_path / name)
    for name in ("none", "memory", "device", "workers"):
        assert_identical(checkpoint_weights(tmp_path / "disk", 2), checkpoint_weights(tmp_path / name, 2))


def test_every_cache_and_worker_count_trains_the_same_weights_with_auto_augment_erasing_and_mixing(images, tmp_path):
    """dataset.auto_augment, random_erasing (per-sample seeds in the batch finishing) and mixup/cutmix (per
    micro-batch seeds in the step) keep the promise: bit-identical weights for every cache and worker count."""
    common = ["trainer.batch_size=6", "trainer.micro_batch_size=3", "trainer.deterministic=true", "trainer.epochs=2",
              "dataset.augment=basic", "dataset.auto_augment=trivial", "dataset.random_erasing=0.5",
              "dataset.mixup.alpha=0.4", "dataset.cutmix.alpha=1.0", "evaluate.after_training=false"]
    for name, extra in (("disk", ["dataset.cache=disk"]), ("none", []), ("memory", ["dataset.cache=memory"]),
                        ("device", ["dataset.cache=device"]), ("workers", ["dataset.cache=disk", "trainer.num_workers=2"])):
        train_job(folder_config(images, *common, *extra), tmp_path / name)
    for name in ("none", "memory", "device", "workers"):
        assert_identical(checkpoint_weights(tmp_path / "disk", 2), checkpoint_weights(tmp_path / name, 2))


def test_the_loader_hands_over_uint8_pixels_each_cropped_by_its_own_seed(images):
    """A micro-batch is finished on the device from uint8 pixels; each sample as it would be alone."""
    import torch

    from runner.data.loaders import on_device, train_loader

    train = datasets.build_splits(folder_config(images, "dataset.cache=disk", "dataset.augment=basic").dataset)["train"]
    loader, sampler = train_loader(train, 4, seed=3, num_workers=0, pin_memory=False)
    (x, y), keys = next(iter(loader)), list(sampler)[:4]
    assert x.pixels.dtype == torch.uint8 and x.pixels.shape == (4, 18, 18, 3)
    assert x.seeds.tolist() == [seed for _, seed in keys]  # the sampler's per-sample seeds
    finished = on_device(x, torch.device("cpu"))
    for (index, seed), sample, label in zip(keys, finished, y, strict=True):
        alone = train.finish(train.pixels(index)[None], torch.tensor([seed]))[0]
        torch.testing.assert_close(alone, sample, atol=1e-6, rtol=0)
        assert label == train[index][1]
    plain = train.finish(x.pixels, torch.zeros(4, dtype=torch.int64))
    assert not torch.allclose(finished, plain)  # the crops depend on the seeds


def test_cache_device_refuses_a_split_larger_than_half_the_free_memory(images, monkeypatch):
    import torch

    from runner.data import pixels
    from runner.data.loaders import on_device, train_loader

    train = datasets.build_splits(folder_config(images, "dataset.cache=device").dataset)["train"]
    size = len(train) * 18 * 18 * 3
    monkeypatch.setattr(pixels, "free_memory", lambda device: 2 * size - 1)
    loader, _ = train_loader(train, 4, seed=0, num_workers=0, pin_memory=False)
    with pytest.raises(UserError, match=r"dataset.cache=device: this split's pixels take .* GiB, more than half of "
                                        r"the .* GiB free on cpu. Fix: dataset.cache=memory"):
        next(iter(loader))
    monkeypatch.setattr(pixels, "free_memory", lambda device: 2 * size)
    x = on_device(next(iter(loader))[0], torch.device("cpu"))  # uint8 on the device, finished there
    assert x.shape == (4, 3, 16, 16) and torch.isfinite(x).all()


@pytest.mark.parametrize("damage", ["cut short", "another array"])
def test_a_damaged_cache_file_is_rebuilt_with_a_warning(images, tmp_path, caplog, damage):
    import numpy as np

    cfg = folder_config(images, "dataset.cache=disk").dataset
    val = datasets.build_splits(cfg)["val"]
    expected = [val[i][0] for i in range(len(val))]
    del val  # (its mapping of the file must not outlive the file's damage: reading it would be a bus error)
    (path,) = (tmp_path / "cache").glob("*.npy")
    intact = path.read_bytes()
    if damage == "cut short":
        path.write_bytes(intact[: len(intact) // 2])
    else:
        np.save(path, np.zeros((2, 3), dtype=np.float32))
    again = datasets.build_splits(cfg)["val"]
    assert f"the decoded-image cache {path} is damaged" in caplog.text and "rebuilding it" in caplog.text
    assert path.read_bytes() == intact and all(again[i][0].equal(x) for i, x in enumerate(expected))


def test_an_unwritable_cache_folder_is_one_line_with_the_fix(images, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("RUNNER_CACHE", str(blocker / "cache"))
    with pytest.raises(UserError, match=r"cannot write the decoded-image cache .*a_file/cache/.* Fix: "
                                        r"RUNNER_CACHE=a writable folder, or dataset.cache=none"):
        datasets.build_splits(folder_config(images, "dataset.cache=disk").dataset)


def test_cache_is_a_setting_of_file_datasets():
    from runner.config.schema import validate

    with pytest.raises(UserError, match=r"dataset.cache='gpu' is not known. Fix: dataset.cache=none\|disk\|memory\|device"):
        validate(compose_config(["dataset=flowers102", "dataset.cache=gpu"]))
    with pytest.raises(Exception, match="cache"):
        compose_config(["dataset.cache=disk"])  # digits: in memory already


def test_cached_pixels_are_uint8_at_a_margin_above_the_crop(images):
    cfg = folder_config(images, "dataset.cache=disk").dataset
    train = datasets.build_splits(cfg)["train"]
    assert train.array.dtype.name == "uint8"
    assert train.array.shape[1:] == (18, 18, 3)  # 16 x 1.15, rounded


@pytest.fixture
def cifar_overrides(cifar10_root, monkeypatch):
    """conftest's tiny CIFAR-10 (20 training images); torchvision's md5 check narrowed to "the file exists"."""
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    return ["dataset=cifar10", f"dataset.root={cifar10_root}", "dataset.download=false", "dataset.val_size=4"]


def test_cifar10_is_read_from_its_uint8_array_and_standardized_as_to_tensor_then_normalize(cifar_overrides):
    import numpy as np
    import torch
    from torchvision.datasets import CIFAR10

    from runner.data.pixels import ImagePixels

    cfg = compose_config(cifar_overrides).dataset
    splits = datasets.build_splits(cfg)
    assert all(isinstance(splits[s], ImagePixels) for s in datasets.SPLITS)
    raw = CIFAR10(cfg.root, train=False)
    mean, std = torch.tensor(list(cfg.mean)).view(3, 1, 1), torch.tensor(list(cfg.std)).view(3, 1, 1)
    for index in range(len(raw)):
        expected = (torch.from_numpy(np.array(raw[index][0])).permute(2, 0, 1) / 255 - mean) / std
        x, y = splits["test"][index]
        torch.testing.assert_close(x, expected, atol=1e-5, rtol=0)
        assert y == raw[index][1]


def test_cifar10_trains_the_same_weights_with_its_images_on_the_device(cifar_overrides, tmp_path):
    common = [*cifar_overrides, "trainer.batch_size=4", "trainer.micro_batch_size=2", "trainer.deterministic=true", "trainer.epochs=2",
              "dataset.augment=basic", "evaluate.after_training=true", "model=convnet", "model.channels=8",
              "model.n_blocks=2"]
    train_job(compose_config([*common, "dataset.cache=none"]), tmp_path / "none")
    train_job(compose_config([*common, "dataset.cache=device", "trainer.num_workers=2"]), tmp_path / "device")
    assert_identical(checkpoint_weights(tmp_path / "none", 2), checkpoint_weights(tmp_path / "device", 2))
    with pytest.raises(UserError, match=r"dataset.cache='disk' is not known. Fix: dataset.cache=none\|device"):
        from runner.config.schema import validate

        validate(compose_config([*cifar_overrides, "dataset.cache=disk"]))
