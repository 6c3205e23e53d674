"""Mixup and CutMix of a training micro-batch: `python -m runner dataset.mixup.alpha=0.2 dataset.cutmix.alpha=1.0`.

timm's Mixup in its default 'batch' mode: the micro-batch is paired with itself reversed; one lam per
micro-batch from Beta(alpha, alpha); with both set, cutmix is chosen with probability
dataset.mixup.switch_prob. Mixup: x lam + x_reversed (1 - lam). CutMix: a box of the reversed batch pasted in
(timm's rand_bbox: sides sqrt(1 - lam) of the image's, centred uniformly, clipped at the border), lam corrected
to the area left unpasted. The targets become soft (N, num_classes): lam one_hot(y) + (1 - lam) one_hot(y_reversed),
summing to 1 (label smoothing, loss.label_smoothing, is applied by the loss on top).

Every draw comes from `seed`, which the training step makes a pure function of (trainer.seed, the update, the
process, the micro-batch) (training/step.py), through numpy's PCG64 on the CPU: the same in any worker count,
cache setting and after a resume, and no device sync.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Mixing:
    num_classes: int
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    switch_prob: float = 0.5

    @property
    def on(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def draw(self, seed: int, height: int, width: int) -> tuple[float, tuple[int, int, int, int] | None]:
        """(lam, the cutmix box (top, bottom, left, right) or None for mixup), from `seed` alone."""
        rng = np.random.Generator(np.random.PCG64(seed))
        cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or rng.random() < self.switch_prob)
        lam = float(rng.beta(*(2 * [self.cutmix_alpha if cutmix else self.mixup_alpha])))
        if not cutmix:
            return lam, None
        ratio = math.sqrt(1 - lam)
        cut_h, cut_w = int(height * ratio), int(width * ratio)
        cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
        top, bottom = min(max(cy - cut_h // 2, 0), height), min(max(cy + (cut_h + 1) // 2, 0), height)
        left, right = min(max(cx - cut_w // 2, 0), width), min(max(cx + (cut_w + 1) // 2, 0), width)
        return 1 - (bottom - top) * (right - left) / (height * width), (top, bottom, left, right)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A finished float (N, C, H, W) micro-batch and its labels (N,) -> the mixed batch, soft targets (N, C)."""
        lam, box = self.draw(seed, *x.shape[-2:])
        reversed_x = x.flip(0)
        if box is None:
            x = x * lam + reversed_x * (1 - lam)
        else:
            top, bottom, left, right = box
            x = x.clone()
            x[..., top:bottom, left:right] = reversed_x[..., top:bottom, left:right]
        one_hot = F.one_hot(y.long(), self.num_classes).float()
        return x, one_hot * lam + one_hot.flip(0) * (1 - lam)


def mixing_of(dataset_cfg) -> Mixing | None:
    """dataset.mixup / dataset.cutmix as a Mixing; None when both are off (or absent: an older run's config)."""
    mixup, cutmix = dataset_cfg.get("mixup") or {}, dataset_cfg.get("cutmix") or {}
    mixing = Mixing(int(dataset_cfg.num_classes), float(mixup.get("alpha", 0.0)), float(cutmix.get("alpha", 0.0)),
                    float(mixup.get("switch_prob", 0.5)))
    return mixing if mixing.on else None

