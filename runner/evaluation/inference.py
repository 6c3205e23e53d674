"""A model's log-probabilities on every sample of a split, exactly once, in eval mode (and with tta=flip)."""

from __future__ import annotations

import contextlib
import math

import torch

from runner.data import loaders


def assert_eval_mode(model: torch.nn.Module) -> None:
    """Dropout and BatchNorm behave differently in training mode: refuse to evaluate in it."""
    training = [name or "(model)" for name, module in model.named_modules() if module.training]
    if training:
        raise RuntimeError(f"the model is in training mode ({', '.join(training[:3])}): call model.eval() first")


@torch.inference_mode()
def predict(model, loader, device: torch.device, amp_dtype, tta: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities and labels of every sample of the loader, exactly once each, both on the CPU whatever
    device the model and the batches are on (DeviceBatches, dataset.cache=device, yields its labels on the
    device): the metrics, the saved predictions and the figures take them from here."""
    assert_eval_mode(model)
    log_probs, labels = [], []
    for x, y in loader:
        x = loaders.on_device(x, device)
        with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext():
            out = model(x).float().log_softmax(dim=1)
            if tta == "flip":  # the mean of the two probabilities, in log space
                mirrored = model(x.flip(-1)).float().log_softmax(dim=1)
                out = torch.logaddexp(out, mirrored) - math.log(2)
        log_probs.append(out.cpu())
        labels.append(torch.as_tensor(y).cpu())
    return torch.cat(log_probs), torch.cat(labels).long()
