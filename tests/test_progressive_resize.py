"""trainer.progressive_resize: the training crop's size per epoch (runner/training/progressive.py), the same
weights for every cache setting and worker count, exact resume mid-ramp, bad settings refused in one line."""

from __future__ import annotations

import logging

import pytest
import torch

from runner.common.errors import UserError
from runner.common.stop_signals import Preempted
from runner.config.schema import validate
from runner.run import train_and_evaluate as train_job
from runner.training import step
from runner.training.progressive import sizes_per_epoch
from tests.conftest import (
    assert_identical,
    checkpoint_weights,
    compose_config,
    make_imagefolder,
    run_cli,
    stop_at_step,
)

SMALL_CONVNET = ["model=convnet", "model.channels=8", "model.n_blocks=2"]


def ramp(start, end_epoch) -> str:
    return f"trainer.progressive_resize={{start:{start},end_epoch:{end_epoch}}}"


@pytest.mark.parametrize(("epochs", "final", "start", "end_epoch", "expected"), [
    # 128 px, half size, over the first 75% of 8 epochs: raw 64, 74.7, 85.3, 96, 106.7, 117.3, then 128
    (8, (128, 128), 0.5, 0.75, [(s, s) for s in (64, 80, 80, 96, 112, 112, 128, 128)]),
    # a ramp over every epoch never reaches the final size; halves round up (40 -> 48, 24 -> 32)
    (4, (64, 96), 0.25, 1.0, [(16, 32), (32, 48), (48, 64), (48, 80)]),
    # a final size off the 16 grid is a size of its own: 86 -> 80, 100 once the ramp is over
    (5, (100, 100), 0.3, 0.5, [(s, s) for s in (32, 64, 80, 100, 100)]),
    # start 1: the final size all along
    (3, (100, 100), 1.0, 0.5, [(100, 100)] * 3),
])
def test_the_crop_size_of_each_epoch_follows_the_table(epochs, final, start, end_epoch, expected):
    assert sizes_per_epoch(epochs, final, start, end_epoch) == expected


@pytest.mark.parametrize(("override", "words"), [
    (ramp(0, 0.75), ["trainer.progressive_resize.start=0", "(0, 1]", "Fix: trainer.progressive_resize.start=0.5"]),
    (ramp(1.5, 0.75), ["trainer.progressive_resize.start=1.5", "(0, 1]"]),
    (ramp(0.5, 0), ["trainer.progressive_resize.end_epoch=0", "(0, 1]", "Fix: trainer.progressive_resize.end_epoch"]),
    (ramp(0.5, 1.25), ["trainer.progressive_resize.end_epoch=1.25", "(0, 1]"]),
    # 0.1 x 64 = 6.4 pixels rounds to 0: no 16-pixel step below it
    (ramp(0.1, 0.75), ["trainer.progressive_resize.start=0.1", "6.4x6.4", "below 16x16", "start=0.25"]),
])
def test_bad_ramps_are_refused_in_one_line(override, words):
    cfg = compose_config(["dataset=synthetic", "dataset.image_size=[64,64]", *SMALL_CONVNET, override])
    with pytest.raises(UserError) as refused:
        validate(cfg)
    message = str(refused.value)
    assert "\n" not in message and all(word in message for word in words), message


def test_a_model_built_for_one_image_size_is_refused():
    cfg = compose_config(["dataset=synthetic", "dataset.image_size=[64,64]", "model=mlp", ramp(0.5, 0.75)])
    with pytest.raises(UserError, match=r"trainer.progressive_resize=.* needs a model that takes any image size.*"
                                        r"model.image_size.*Fix: .*model=convnet.*trainer.progressive_resize=null"):
        validate(cfg)


def test_the_default_is_off():
    cfg = compose_config([])
    assert cfg.trainer.progressive_resize is None
    validate(cfg)


@pytest.mark.parametrize(("override", "fix"), [
    ("trainer.progressive_resize={start:0.5,size:3}", "Fix: trainer.progressive_resize={start:0.5,end_epoch:0.75}"),
    (ramp(0, 0.75), "Fix: trainer.progressive_resize.start=0.5"),
    ("trainer.progressive_resize.start=0.5", "while trainer.progressive_resize is null. "
                                             "Fix: trainer.progressive_resize={start:0.5}"),
])
def test_the_command_refuses_a_bad_ramp_in_one_line_and_writes_nothing(workdir, override, fix):
    result = run_cli(["dataset=synthetic", "dataset.image_size=[64,64]", *SMALL_CONVNET, override], workdir)
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and fix in lines[0], lines
    assert not (workdir / "outputs").exists()


@pytest.fixture
def images(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNNER_CACHE", str(tmp_path / "cache"))
    return make_imagefolder(tmp_path / "images", classes=3, per_class=8, size=(40, 52))


def folder_config(root, *overrides):
    return compose_config(["dataset=imagefolder", f"dataset.root={root}", "dataset.augment=basic",
                           "trainer.deterministic=true", "trainer.batch_size=6", "trainer.micro_batch_size=3",
                           "checkpoint.every_epochs=1", "evaluate.after_training=false", *SMALL_CONVNET, *overrides])


def record_sizes(monkeypatch) -> list[tuple[int, int, int]]:
    """(global step, height, width) of every micro-batch the loop trains on."""
    seen = []
    real = step.images_to_device  # what the loop's micro_batch_inputs calls

    def recording(x, device, channels_last, size=None):
        images = real(x, device, channels_last, size)
        seen.append(tuple(images.shape[-2:]))
        return images
    monkeypatch.setattr(step, "images_to_device", recording)
    return seen


@pytest.mark.slow
def test_every_cache_and_worker_count_trains_the_same_weights_while_the_size_grows(images, tmp_path, monkeypatch,
                                                                                  caplog):
    """The size is given to the batch finishing (crop straight to it), so decoded files, the mapped cache, memory,
    the device and loader workers all feed the same crops: bit-identical weights. Sizes 16, then 32."""
    common = ["dataset.image_size=[32,32]", "trainer.epochs=2", ramp(0.5, 0.5)]
    seen = record_sizes(monkeypatch)
    with caplog.at_level(logging.INFO):
        train_job(folder_config(images, *common, "dataset.cache=disk"), tmp_path / "disk")
    assert "epoch 1: training at 16x16 (progressive_resize)" in caplog.text
    assert "epoch 2: training at 32x32 (progressive_resize)" in caplog.text
    assert sorted(set(seen)) == [(16, 16), (32, 32)]  # as many sizes as the plan: torch.compile compiles each once
    assert seen == sorted(seen)  # the size changes only between epochs, never back
    for name, extra in (("none", []), ("memory", ["dataset.cache=memory"]), ("device", ["dataset.cache=device"]),
                        ("workers", ["dataset.cache=disk", "trainer.num_workers=2"])):
        train_job(folder_config(images, *common, *extra), tmp_path / name)
        assert_identical(checkpoint_weights(tmp_path / "disk", 2), checkpoint_weights(tmp_path / name, 2))
    plain = folder_config(images, "dataset.image_size=[32,32]", "trainer.epochs=2", "dataset.cache=disk")
    train_job(plain, tmp_path / "plain")
    first = checkpoint_weights(tmp_path / "disk", 2)
    assert any(not first[k].equal(v) for k, v in checkpoint_weights(tmp_path / "plain", 2).items())  # it did resize


@pytest.mark.slow
def test_a_run_stopped_mid_ramp_resumes_bit_identical(images, tmp_path, monkeypatch, caplog):
    """Sizes 16, 32, 64 over 3 epochs; stopped in the middle of epoch 2 (at 32x32), then rerun."""
    common = ["dataset.image_size=[64,64]", "trainer.epochs=3", ramp(0.25, 0.75), "dataset.cache=memory"]
    train_job(folder_config(images, *common), tmp_path / "straight")
    with monkeypatch.context() as patch:
        stop_at_step(patch, 4 + 2)  # 24 training images: 4 updates an epoch
        with pytest.raises(Preempted):
            train_job(folder_config(images, *common), tmp_path / "resumed")
    assert list((tmp_path / "resumed" / "checkpoints").glob("preempt-step-*.pt"))
    seen = record_sizes(monkeypatch)
    with caplog.at_level(logging.INFO):
        train_job(folder_config(images, *common), tmp_path / "resumed")
    assert "epoch 2: training at 32x32 (progressive_resize)" in caplog.text
    assert "epoch 2/3 (resumed after 12 samples)" in caplog.text
    assert seen[0] == (32, 32) and seen[-1] == (64, 64)
    assert_identical(checkpoint_weights(tmp_path / "straight", 3), checkpoint_weights(tmp_path / "resumed", 3))


def test_a_float_batch_is_resized_to_the_epochs_size():
    """Datasets of float tensors (synthetic, digits, a custom dataset's) are resized on the device, bilinearly
    with antialiasing, from the size they come at; uint8 batches are cropped straight to it."""
    import torch.nn.functional as F

    from runner.data.loaders import on_device

    x = torch.randn(3, 2, 11, 13)
    resized = on_device(x, torch.device("cpu"), (5, 7))
    expected = F.interpolate(x, size=(5, 7), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(resized, expected, atol=0, rtol=0)
    assert on_device(x, torch.device("cpu"), (11, 13)).equal(x) and on_device(x, torch.device("cpu")).equal(x)


def test_a_uint8_batch_is_cropped_straight_to_the_size_it_is_given():
    from runner.data.batch_augment import Finish

    pixels = torch.randint(0, 256, (3, 18, 18, 3), dtype=torch.uint8)
    seeds = torch.arange(3)
    finish = Finish((16, 16), (0.5,) * 3, (0.5,) * 3, augment=True)
    small = finish(pixels, seeds, size=(8, 8))
    assert small.shape == (3, 3, 8, 8)
    assert finish(pixels, seeds, size=(16, 16)).equal(finish(pixels, seeds))  # the same crops, the final size
    # the same crop box as at the final size, resampled to fewer pixels: about the 16 px crop, averaged down
    big = finish(pixels, seeds)
    assert (torch.nn.functional.avg_pool2d(big, 2) - small).abs().mean() < 0.2


def test_the_size_is_recorded_in_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose_config(["dataset=synthetic", "dataset.image_size=[32,32]", "dataset.train_size=12",
                          "dataset.val_size=4", "dataset.test_size=4", "trainer.epochs=2", "trainer.batch_size=6",
                          "trainer.micro_batch_size=6", "evaluate.after_training=false", *SMALL_CONVNET,
                          ramp(0.5, 0.5)])
    train_job(cfg, tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/image_size")] == [(0, 16.0), (2, 32.0)]

