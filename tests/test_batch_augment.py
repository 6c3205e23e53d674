"""Micro-batches finished on the device (runner/data/batch_augment.py) against simpler references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from runner.data.batch_augment import Finish, crop_boxes, resized_crops, uniforms


def test_uniforms_are_a_function_of_the_seed_alone_and_spread_evenly():
    seeds = np.arange(20000, dtype=np.int64) * 7919 + 2**40
    u = uniforms(seeds, 4)
    assert u.shape == (20000, 4) and u.min() >= 0 and u.max() < 1
    assert np.array_equal(uniforms(seeds[123:124], 4), u[123:124])  # alone or in a batch: the same numbers
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.03  # a sample's numbers are not tied to each other
    assert abs(np.corrcoef(u[:-1, 0], u[1:, 0])[0, 1]) < 0.03  # nor to the next sample's


@pytest.mark.parametrize("height, width", [(147, 147), (60, 200), (200, 60), (18, 18)])
def test_crop_boxes_follow_torchvisions_random_resized_crop(height, width):
    boxes, mirrored = crop_boxes(np.arange(5000, dtype=np.int64), height, width)
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
    assert (h > 0).all() and (w > 0).all()
    # torchvision draws the same way: compare the distributions of the area fraction and the aspect
    reference = np.array([v2.RandomResizedCrop.get_params(torch.empty(1, height, width), [0.08, 1.0],
                                                           [3 / 4, 4 / 3]) for _ in range(5000)])
    for ours, theirs in ((h * w / (height * width), reference[:, 2] * reference[:, 3] / (height * width)),
                         (np.log(w / h), np.log(reference[:, 3] / reference[:, 2]))):
        assert abs(np.mean(ours) - np.mean(theirs)) < 0.02 and abs(np.std(ours) - np.std(theirs)) < 0.02
    assert 0.47 < mirrored.mean() < 0.53


def test_a_crop_is_resampled_as_torchvision_resizes_the_cropped_pixels():
    images = torch.randint(0, 256, (4, 3, 30, 40), generator=torch.Generator().manual_seed(0)).float()
    boxes = torch.tensor([[0, 0, 30, 40], [3, 5, 10, 12], [10, 2, 20, 31], [7, 9, 16, 16]])
    mirrored = torch.tensor([False, True, False, True])
    out = resized_crops(images, boxes, mirrored, (16, 16))
    for image, (top, left, h, w), flip, got in zip(images, boxes.tolist(), mirrored, out, strict=True):
        expected = TF.resized_crop(image, top, left, h, w, [16, 16], antialias=False)
        if flip:
            expected = expected.flip(-1)
        torch.testing.assert_close(got, expected, atol=1e-3, rtol=0)


def test_finish_standardizes_as_to_tensor_then_normalize_and_resizes_eval_batches_with_antialias():
    pixels = torch.randint(0, 256, (2, 18, 18, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    finish = Finish((16, 16), (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), augment=False)
    got = finish(pixels, torch.zeros(2, dtype=torch.int64))
    reference = v2.Compose([v2.Resize([16, 16], antialias=True), v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize([0.4, 0.5, 0.6], [0.2, 0.25, 0.3])])
    for sample, result in zip(pixels, got, strict=True):
        expected = v2.Normalize([0.4, 0.5, 0.6], [0.2, 0.25, 0.3])(
            F.interpolate(sample.permute(2, 0, 1)[None].float(), size=(16, 16), mode="bilinear", antialias=True,
                          align_corners=False)[0] / 255)
        torch.testing.assert_close(result, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(result, reference(sample.permute(2, 0, 1)), atol=3 / 255 / 0.2, rtol=0)


def test_a_samples_augmentation_does_not_depend_on_its_batch():
    pixels = torch.randint(0, 256, (6, 18, 18, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    seeds = torch.tensor([5, 11, 17, 2**61, 3, 9])
    finish = Finish((16, 16), (0.5,) * 3, (0.5,) * 3, augment=True)
    whole = finish(pixels, seeds)
    for i in range(6):
        torch.testing.assert_close(finish(pixels[i:i + 1], seeds[i:i + 1])[0], whole[i], atol=1e-6, rtol=0)
    assert not torch.equal(finish(pixels, seeds + 1), whole)  # other seeds, other crops
    assert math.isclose(whole.mean().item(), (pixels.float() / 255 - 0.5).div(0.5).mean().item(), abs_tol=0.15)


@pytest.mark.parametrize("augment", [True, False])
def test_a_finished_batch_has_the_standard_layout(augment):
    """Like any other dataset's batch: channels_last comes only from trainer.channels_last."""
    pixels = torch.randint(0, 256, (3, 18, 18, 3), dtype=torch.uint8)
    finished = Finish((16, 16), (0.5,) * 3, (0.5,) * 3, augment)(pixels, torch.arange(3))
    assert finished.is_contiguous()
