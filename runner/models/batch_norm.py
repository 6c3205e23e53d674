"""BatchNorm statistics measured again, for averaged weights: `python -m runner.evaluate run_dir=RUN` (an SWA
row) and `python -m runner loss=distill loss.teachers=[RUN:best]` (a teacher whose best row is its SWA weights).

SWA averages weights the running statistics were never measured with; torch.optim.swa_utils.update_bn
measures them again over the training data. Here with its semantics (statistics reset, momentum None: a
cumulative average over the batches), in fp32, with only the BatchNorm layers in training mode, so that
dropout stays off and the result is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def batch_norm_modules(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recompute_statistics(model: nn.Module, inputs: Iterable[torch.Tensor]) -> bool:
    """The running statistics of the model's BatchNorm layers, measured again over `inputs` (the model's input
    batches, on its device); False, the model untouched, when it has none. The model is left in eval mode."""
    layers = batch_norm_modules(model)
    if not layers:
        return False
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
        layer.train()
    try:
        for x in inputs:
            model(x)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        model.eval()
    return True
