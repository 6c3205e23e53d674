"""A model's log-probabilities on every sample of a split, exactly once, in eval mode, with its test-time augmentation.

`python -m runner.evaluate run_dir=RUN tta=flip|translate|flip+translate|multicrop` (or a run's own
`evaluate.tta`). Each tta is a set of weighted views of the batch; the prediction is the weighted mean
of the views' probabilities, taken in log space:

- none: the image.
- flip: the image and its mirror, 1/2 each.
- translate: airbench's translate views (KellerJordan/cifar10-airbench, `infer_mirror_translate`
  without the mirror): the image (1/2) and the image moved one pixel down-right and one pixel
  up-left (1/4 each; the two shifted views lie 2 pixels apart), the uncovered edge filled by
  reflection (reflect padding by 1, then the two corner crops).
- flip+translate: airbench's level 2: each translate view and its mirror, half its weight each
  (six views: 1/4, 1/4, then 1/8 for each of the four shifted ones).
- multicrop: five crops (four corners and the centre, torchvision's five_crop positions), each 7/8
  of the side, resized back to the input size bilinearly, 1/5 each. The batch arrives already at
  dataset.image_size, so the crops zoom in by 8/7 rather than crop a larger image: the classic
  224-of-256 five crops, applied to what the evaluator has (no pixel is made up at the borders,
  as padding would).

Airbench averages logits; runner averages probabilities (as tta=flip always has), so that an
ensemble of tta'd members stays a mean of probabilities. The views are made outside autocast (in
the batch's own dtype) and each goes through the model separately, so the memory of a forward
pass stays that of one batch and a sample's prediction does not depend on its batch.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from runner.data import loaders

TTA = ("none", "flip", "translate", "flip+translate", "multicrop")  # evaluate.tta's choices, in settings.py too
MULTICROP_SIDE = 7 / 8  # of the input's height and width


def assert_eval_mode(model: torch.nn.Module) -> None:
    """Dropout and BatchNorm behave differently in training mode: refuse to evaluate in it."""
    training = [name or "(model)" for name, module in model.named_modules() if module.training]
    if training:
        raise RuntimeError(f"the model is in training mode ({', '.join(training[:3])}): call model.eval() first")


def translated(x: torch.Tensor) -> list[tuple[torch.Tensor, float]]:
    """The image (1/2), moved one pixel down-right and one up-left (1/4 each), edges reflected: airbench's views."""
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    height, width = x.shape[-2:]
    return [(x, 0.5), (padded[..., :height, :width], 0.25), (padded[..., 2:, 2:], 0.25)]


def five_crops(x: torch.Tensor) -> list[tuple[torch.Tensor, float]]:
    """Four corner crops and the centre one, each MULTICROP_SIDE of the side, resized back to the input's size."""
    height, width = x.shape[-2:]
    crop_h, crop_w = max(1, round(height * MULTICROP_SIDE)), max(1, round(width * MULTICROP_SIDE))
    top, left = round((height - crop_h) / 2), round((width - crop_w) / 2)  # torchvision's centre_crop
    corners = [(0, 0), (0, width - crop_w), (height - crop_h, 0), (height - crop_h, width - crop_w), (top, left)]
    return [(F.interpolate(x[..., i:i + crop_h, j:j + crop_w], size=(height, width), mode="bilinear",
                           align_corners=False), 1 / 5) for i, j in corners]


def views(x: torch.Tensor, tta: str) -> list[tuple[torch.Tensor, float]]:
    """(view, weight) of a batch under a tta; the weights sum to 1."""
    if tta == "none":
        return [(x, 1.0)]
    if tta == "flip":
        return [(x, 0.5), (x.flip(-1), 0.5)]
    if tta == "translate":
        return translated(x)
    if tta == "flip+translate":
        return [(v, weight / 2) for view, weight in translated(x) for v in (view, view.flip(-1))]
    if tta == "multicrop":
        return five_crops(x)
    raise ValueError(f"unknown tta {tta!r}: one of {', '.join(TTA)}")


def mean_of_views(model, x: torch.Tensor, tta: str, autocast) -> torch.Tensor:
    """log sum_k w_k softmax(model(view_k)), each view's log-softmax in float32 whatever the autocast."""
    weighted = views(x, tta)
    outputs = []
    for view, weight in weighted:
        with autocast():
            log_probs = model(view).float().log_softmax(dim=1)
        outputs.append(log_probs if len(weighted) == 1 else log_probs + math.log(weight))
    return outputs[0] if len(outputs) == 1 else torch.logsumexp(torch.stack(outputs), dim=0)


@torch.inference_mode()
def predict(model, loader, device: torch.device, amp_dtype, tta: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities and labels of every sample of the loader, exactly once each, both on the CPU whatever
    device the model and the batches are on (DeviceBatches, dataset.cache=device, yields its labels on the
    device): the metrics, the saved predictions and the figures take them from here."""
    assert_eval_mode(model)

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    log_probs, labels = [], []
    for x, y in loader:
        x = loaders.on_device(x, device)
        log_probs.append(mean_of_views(model, x, tta, autocast).cpu())
        labels.append(torch.as_tensor(y).cpu())
    return torch.cat(log_probs), torch.cat(labels).long()
