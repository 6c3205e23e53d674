"""A pretrained 3-channel stem given 1-channel (or 4-channel ...) data: `python -m runner dataset=mnist model=timm model.pretrained=true`.

The rule is timm's (timm.models.adapt_input_conv), so timm and torchvision models adapt alike:
1 channel gets the sum of the three filters (a grey image x gives the response the RGB image
(x, x, x) gave); C channels get the filters repeated to C and scaled by 3/C.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


def adapt_input_conv(in_channels: int, weight: torch.Tensor) -> torch.Tensor:
    from timm.models import adapt_input_conv as timm_rule

    return timm_rule(in_channels, weight)


def first_conv_name(model: nn.Module) -> str:
    """The dotted name of the model's first Conv2d (its stem: conv1, features.0.0, conv_proj ...)."""
    return next(name for name, module in model.named_modules() if isinstance(module, nn.Conv2d))


def set_input_channels(model: nn.Module, in_channels: int, adapt: bool, model_name: str) -> None:
    """Give the stem `in_channels` inputs: its filters adapted (pretrained weights) or new (from scratch)."""
    name = first_conv_name(model)
    old = model.get_submodule(name)
    if old.in_channels == in_channels:
        return
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, old.dilation,
                    old.groups, old.bias is not None, old.padding_mode)
    if adapt:
        with torch.no_grad():
            new.weight.copy_(adapt_input_conv(in_channels, old.weight))
            if old.bias is not None:
                new.bias.copy_(old.bias)
        log.info("model: %s's pretrained %d-channel stem %s adapted to %d input channels (%s, as timm does)",
                 model_name, old.in_channels, name, in_channels,
                 "its filters summed" if in_channels == 1 else f"its filters repeated and scaled by 3/{in_channels}")
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)
