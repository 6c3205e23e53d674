"""Per-sample TrivialAugment-wide, RandAugment and random erasing: `python -m runner dataset.auto_augment=trivial
dataset.random_erasing=0.25` (or `dataset.auto_augment=rand dataset.rand_augment.n=2 dataset.rand_augment.m=9`).

`SampleOps` runs inside the batch finishing (batch_augment.Finish, on the device) and in the tensor datasets'
per-sample transform (transforms.py), in torchvision's usual order: after the crop and flip, the auto-augment
ops on uint8 pixels, then standardization, then random erasing on the standardized image (value 0, scale
0.02-0.33, aspect 0.3-3.3, torchvision's defaults). Every draw (which op, its magnitude bin and sign, whether
and where to erase) comes from the sample's own seed through `batch_augment.uniforms`, at counters the crop
does not use, so a sample is augmented the same in any batch, worker, cache setting or resume, and a run with
these settings off draws exactly the crops it drew before they existed. Each op is the torchvision v2
functional call that v2.TrivialAugmentWide / v2.RandAugment make for the same op and magnitude
(tests/test_augment_ops.py checks the op lists, the magnitude bins and the outputs against theirs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from runner.data.batch_augment import pinned_to_device, uniforms

POLICIES = ("none", "trivial", "rand")
TRIVIAL_BINS = 31  # v2.TrivialAugmentWide's num_magnitude_bins default
RAND_BINS = 31  # v2.RandAugment's: dataset.rand_augment.m is a bin of these 31 (0..30)
AUTO_AUGMENT_COUNTERS, ERASING_COUNTERS = 1000, 2000  # uniforms' counters: the crop uses 1..23
ERASE_SCALE, ERASE_RATIO, ERASE_TRIES = (0.02, 0.33), (0.3, 3.3), 10


def linspace(first: float, last: float):
    return lambda bins, height, width: torch.linspace(first, last, bins)


def no_magnitude(bins, height, width):
    return None


# op -> (magnitudes(bins, height, width), signed): the two policies' spaces, in v2's order (the op draw indexes it)
TRIVIAL_SPACE = {
    "Identity": (no_magnitude, False),
    "ShearX": (linspace(0.0, 0.99), True),
    "ShearY": (linspace(0.0, 0.99), True),
    "TranslateX": (linspace(0.0, 32.0), True),
    "TranslateY": (linspace(0.0, 32.0), True),
    "Rotate": (linspace(0.0, 135.0), True),
    "Brightness": (linspace(0.0, 0.99), True),
    "Color": (linspace(0.0, 0.99), True),
    "Contrast": (linspace(0.0, 0.99), True),
    "Sharpness": (linspace(0.0, 0.99), True),
    "Posterize": (lambda bins, height, width: (8 - (torch.arange(bins) / ((bins - 1) / 6))).round().int(), False),
    "Solarize": (linspace(1.0, 0.0), False),
    "AutoContrast": (no_magnitude, False),
    "Equalize": (no_magnitude, False),
}
RAND_SPACE = {
    "Identity": (no_magnitude, False),
    "ShearX": (linspace(0.0, 0.3), True),
    "ShearY": (linspace(0.0, 0.3), True),
    "TranslateX": (lambda bins, height, width: torch.linspace(0.0, 150.0 / 331.0 * width, bins), True),
    "TranslateY": (lambda bins, height, width: torch.linspace(0.0, 150.0 / 331.0 * height, bins), True),
    "Rotate": (linspace(0.0, 30.0), True),
    "Brightness": (linspace(0.0, 0.9), True),
    "Color": (linspace(0.0, 0.9), True),
    "Contrast": (linspace(0.0, 0.9), True),
    "Sharpness": (linspace(0.0, 0.9), True),
    "Posterize": (lambda bins, height, width: (8 - (torch.arange(bins) / ((bins - 1) / 4))).round().int(), False),
    "Solarize": (linspace(1.0, 0.0), False),
    "AutoContrast": (no_magnitude, False),
    "Equalize": (no_magnitude, False),
}


def apply_op(image: torch.Tensor, op: str, magnitude: float) -> torch.Tensor:
    """One uint8 (C, H, W) image through one op, as v2's _AutoAugmentBase applies it (nearest, fill 0)."""
    # torchvision takes a second to import: only where augmentation is on
    from torchvision.transforms.v2 import functional as F

    if op == "Identity":
        return image
    if op in ("ShearX", "ShearY"):
        shear = math.degrees(math.atan(magnitude))
        return F.affine(image, angle=0.0, translate=[0, 0], scale=1.0,
                        shear=[shear, 0.0] if op == "ShearX" else [0.0, shear], center=[0, 0])
    if op in ("TranslateX", "TranslateY"):
        shift = int(magnitude)
        return F.affine(image, angle=0.0, translate=[shift, 0] if op == "TranslateX" else [0, shift], scale=1.0,
                        shear=[0.0, 0.0])
    if op == "Rotate":
        return F.rotate(image, angle=magnitude)
    factors = {"Brightness": F.adjust_brightness, "Color": F.adjust_saturation, "Contrast": F.adjust_contrast,
               "Sharpness": F.adjust_sharpness}
    if op in factors:
        return factors[op](image, 1.0 + magnitude)
    if op == "Posterize":
        return F.posterize(image, bits=int(magnitude))
    if op == "Solarize":
        return F.solarize(image, threshold=255.0 * magnitude)
    if op == "AutoContrast":
        return F.autocontrast(image)
    if op == "Equalize":
        return F.equalize(image)
    raise ValueError(f"unknown op {op}")


def drawn_ops(seeds: np.ndarray, policy: str, height: int, width: int, n: int = 2, m: int = 9
              ) -> list[list[tuple[str, float]]]:
    """Each sample's ops and signed magnitudes, as v2.TrivialAugmentWide (one op, a random bin of 31) or
    v2.RandAugment (n ops, bin m of 31) draws them: the op uniformly, the sign negative with probability 1/2."""
    space, bins, count = (TRIVIAL_SPACE, TRIVIAL_BINS, 1) if policy == "trivial" else (RAND_SPACE, RAND_BINS, n)
    names = list(space)
    u = uniforms(seeds, 3 * count, start=AUTO_AUGMENT_COUNTERS)
    drawn = []
    for row in u:
        ops = []
        for k in range(count):
            op = names[min(int(row[3 * k] * len(names)), len(names) - 1)]
            magnitudes_of, signed = space[op]
            magnitudes = magnitudes_of(bins, height, width)
            magnitude = 0.0
            if magnitudes is not None:
                chosen = min(int(row[3 * k + 1] * bins), bins - 1) if policy == "trivial" else m
                magnitude = float(magnitudes[chosen])
                if signed and row[3 * k + 2] <= 0.5:
                    magnitude *= -1
            ops.append((op, magnitude))
        drawn.append(ops)
    return drawn


def erasing_boxes(seeds: np.ndarray, probability: float, height: int, width: int) -> np.ndarray:
    """(N, 4) boxes (top, left, height, width) to erase; height 0 where a sample is not erased. v2.RandomErasing's
    draw: erase with `probability`; ten tries of an area (2-33% of the image) and an aspect (0.3-3.3, log-uniform)
    until the box fits inside; none fits: not erased."""
    u = uniforms(seeds, 1 + 2 * ERASE_TRIES + 2, start=ERASING_COUNTERS)
    area = height * width * (ERASE_SCALE[0] + (ERASE_SCALE[1] - ERASE_SCALE[0]) * u[:, 1:1 + ERASE_TRIES])
    low, high = math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1])
    aspect = np.exp(low + (high - low) * u[:, 1 + ERASE_TRIES:1 + 2 * ERASE_TRIES])
    h = np.rint(np.sqrt(area * aspect)).astype(np.int64)
    w = np.rint(np.sqrt(area / aspect)).astype(np.int64)
    fits = (h < height) & (w < width)
    first, rows = fits.argmax(axis=1), np.arange(len(seeds))
    erased = (u[:, 0] < probability) & fits.any(axis=1)
    h, w = np.where(erased, h[rows, first], 0), np.where(erased, w[rows, first], 0)
    top = np.floor(u[:, -2] * (height - h + 1)).astype(np.int64)
    left = np.floor(u[:, -1] * (width - w + 1)).astype(np.int64)
    return np.stack([top, left, h, w], axis=1)


def erased(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Float (N, C, H, W) images with each one's box set to 0 (v2.functional.erase's value 0), in one pass."""
    rows = torch.arange(images.shape[-2], device=images.device).view(1, -1, 1)
    cols = torch.arange(images.shape[-1], device=images.device).view(1, 1, -1)
    top, left, h, w = (part.view(-1, 1, 1) for part in boxes.unbind(1))
    inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
    return images.masked_fill_(inside[:, None], 0.0)


@dataclass(frozen=True)
class SampleOps:
    """The per-sample ops after the crop: dataset.auto_augment (with dataset.rand_augment's n and m) and
    dataset.random_erasing's probability."""

    auto_augment: str = "none"
    n: int = 2
    m: int = 9
    erasing: float = 0.0

    @property
    def on(self) -> bool:
        return self.auto_augment != "none" or self.erasing > 0

    def pixels(self, images: torch.Tensor, seeds: np.ndarray) -> torch.Tensor:
        """uint8 (N, C, H, W) -> each sample through its drawn ops (one image at a time: the ops' parameters
        differ per sample; about 0.1 ms an image at 128 px on a CPU)."""
        if self.auto_augment == "none":
            return images
        drawn = drawn_ops(seeds, self.auto_augment, *images.shape[-2:], self.n, self.m)
        out = images.clone()
        for i, ops in enumerate(drawn):
            for op, magnitude in ops:
                out[i] = apply_op(out[i], op, magnitude)
        return out

    def erase(self, images: torch.Tensor, seeds: np.ndarray) -> torch.Tensor:
        """Standardized float (N, C, H, W) -> erased where drawn (in place)."""
        if self.erasing <= 0:
            return images
        boxes = pinned_to_device(torch.from_numpy(erasing_boxes(seeds, self.erasing, *images.shape[-2:])), images.device)
        return erased(images, boxes)


def sample_ops(cfg, train: bool) -> SampleOps | None:
    """A dataset config's per-sample ops for a split (training only; None when off or for other splits)."""
    if not train:
        return None
    rand = cfg.get("rand_augment") or {}
    ops = SampleOps(cfg.get("auto_augment", "none"), int(rand.get("n", 2)), int(rand.get("m", 9)),
                    float(cfg.get("random_erasing", 0.0)))
    return ops if ops.on else None
