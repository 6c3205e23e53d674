"""The check that a pretrained model gets the inputs its weights were trained on:
`python -m runner.check model=timm model.name=convnext_tiny.fb_in1k model.pretrained=true checks=[pretrained_inputs]`.

The practice's silent bug: "you initialized your weights from a pretrained checkpoint but didn't
use the original mean". Everything trains, a little worse. Two looks:
(a) the configured standardization (dataset.mean/std) against the weights' own (their source named);
(b) a real batch as the model receives it, mapped back to pixels with the weights' mean/std. Inputs
standardized as the weights expect map back to pixels in [0, 1], as photographs span them; 0..1
pixels, 0..255 pixels, or inputs standardized with other statistics (the data's own, where the
weights want ImageNet's) map back to values outside [0, 1] or short of it. (b) also catches a
custom dataset that standardizes inside its own transform while the config looks right.
"""

from __future__ import annotations

import torch

from runner.checks.setup import Result, Setup, fmt
from runner.data import standardization
from runner.data.custom import UserSplit
from runner.data.stored import stored_item
from runner.data.transforms import channel_stats
from runner.models.preprocessing import weights_preprocessing

SAMPLES = 32  # pixels of 32 images span a channel's range; one batch, no model: well under a second
OUTSIDE = 0.1  # mapped back, the pixels may leave [0, 1] by this much (a resize's overshoot)
SHORT = 0.15  # photographs reach within this of 0 and of 1 in some channel over a batch
CONFIG_FIX = ("Fix: leave dataset.mean/std to follow the weights: drop dataset.mean=... and dataset.std=... from the "
              "command line (and dataset.normalize=dataset, where set)")
DATASET_FIX = ("Fix: standardize with those values where your dataset makes its tensors, or hand runner PIL images "
               "(it standardizes them with dataset.mean/std, which follow the weights)")


def check_pretrained_inputs(setup: Setup) -> Result:
    """FAIL when the inputs are standardized otherwise than the model's pretrained weights expect."""
    cfg = setup.cfg
    preprocessing = weights_preprocessing(cfg.model)
    if preprocessing is None:
        return Result("pretrained_inputs", "no pretrained weights (the model starts from scratch): nothing to match",
                      "the inputs the weights were trained on", "PASS")
    mean, std = standardization.expected_stats(preprocessing, cfg.dataset.channels)
    shown = standardization.shown
    expected = f"standardized as the weights expect: mean {shown(mean)}, std {shown(std)} ({preprocessing['source']})"
    trained_on = f"the weights were trained on inputs standardized with mean {shown(mean)}, std {shown(std)}"
    configured = channel_stats(cfg.dataset)
    config_fault = None
    if not standardization.agrees(cfg.dataset, mean, std):
        config_fault = f"dataset.mean/std are {fmt(configured[0])}/{fmt(configured[1])}"
    if cfg.dataset.name == "synthetic":  # Gaussian noise, not pixels: nothing to map back
        figure = f"dataset.mean {fmt(configured[0])}, std {fmt(configured[1])} (synthetic data: no pixels to measure)"
        if config_fault:
            return Result("pretrained_inputs", figure, expected, "FAIL", f"{trained_on}; {config_fault}. {CONFIG_FIX}")
        return Result("pretrained_inputs", figure, expected, "PASS")
    x, _ = setup.batch(size=SAMPLES)
    x = x.float().cpu()
    pixels = x * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
    low, high = pixels.amin(dim=(0, 2, 3)), pixels.amax(dim=(0, 2, 3))
    figure = f"mapped back with the weights' mean/std: pixels from {fmt(low)} to {fmt(high)}"
    details = {"weights_mean": mean, "weights_std": std, "source": preprocessing["source"],
               "pixels_min": low.tolist(), "pixels_max": high.tolist()}
    cause = measured_cause(x, low, high, mean, std, user_tensors=users_own_tensors(setup.splits["train"]))
    if cause is None and config_fault is None:
        return Result("pretrained_inputs", figure, expected, "PASS", details=details)
    causes = "; ".join(c for c in (cause, config_fault and f"{config_fault}, not those") if c)
    fix = CONFIG_FIX if config_fault else DATASET_FIX
    return Result("pretrained_inputs", figure, expected, "FAIL", f"{trained_on}; {causes}. {fix}", details)


def measured_cause(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor, mean: list[float], std: list[float],
                   user_tensors: bool) -> str | None:
    """What the batch's inputs are, where they are not what the weights expect; None when they are."""
    low_x, high_x = float(x.min()), float(x.max())
    weights_want_raw = all(abs(m) < 1e-6 for m in mean) and all(abs(s - 1) < 1e-6 for s in std)
    if low_x >= -1e-3 and high_x <= 1 + 1e-3 and not weights_want_raw:
        return f"these inputs are 0..1 pixels (from {low_x:.2f} to {high_x:.2f}), not standardized"
    if low_x >= -1e-3 and high_x > 2:
        return f"these inputs are 0..255 pixels (from {low_x:.0f} to {high_x:.0f}), not standardized"
    own = own_statistics(x)
    if (low < -OUTSIDE).any() or (high > 1 + OUTSIDE).any():
        return f"these inputs map back to values outside the 0..1 of pixels: standardized with other statistics{own}"
    if user_tensors and ((low > SHORT) | (high < 1 - SHORT)).all():
        return ("these inputs map back to pixels that fall short of the 0..1 photographs span in every channel: "
                f"standardized with other statistics{own}")
    return None


def own_statistics(x: torch.Tensor) -> str:
    """Name the usual culprit when the batch looks standardized with the data's own statistics (mean ~0, std ~1)."""
    mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))
    if (mean.abs() < 0.25).all() and ((std - 1).abs() < 0.25).all():
        return f", likely the data's own per-channel ones (the batch has mean {fmt(mean)}, std {fmt(std)})"
    return f" (the batch has mean {fmt(mean)}, std {fmt(std)})"


def users_own_tensors(dataset) -> bool:
    """Are the samples the user's own float tensors, used as they are (standardized, if at all, by their code)?
    Only then is a short span of pixels a sign of another standardization: runner's own standardization is
    dataset.mean/std exactly, and low-contrast data is the data's own business."""
    while hasattr(dataset, "dataset") and hasattr(dataset, "indices"):  # Subset
        dataset = dataset.dataset
    if not isinstance(dataset, UserSplit) or len(dataset) == 0:
        return False
    item = stored_item(dataset, 0)
    return isinstance(item, torch.Tensor) and item.is_floating_point()
