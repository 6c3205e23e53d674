"""Building the configured model: `python -m runner model=NAME` (runner.models.build, called by the job).

`build` instantiates `cfg.model` and sets its output bias; `output_layer` finds the layer that
makes the logits (runner's own models, timm's get_classifier, torchvision's new head), which
freezing, bias init and the fine-tuning stages use.
"""

from __future__ import annotations

import torch
from torch import nn

from runner.common.errors import UserError
from runner.common.rules import fail, one_of

FREEZE = ("none", "backbone")


def build(cfg, class_counts: torch.Tensor | None = None) -> nn.Module:
    """The configured model; with init_output_bias=prior, its output bias set to log class frequencies.

    The practice: a classifier whose bias starts at the class prior begins at the loss of
    predicting the prior (its entropy) instead of paying for learning the imbalance first.
    """
    from omegaconf import OmegaConf

    settings = OmegaConf.to_container(cfg, resolve=True)
    init_bias = settings.pop("init_output_bias", "none")
    model = instantiate_model(settings)
    if init_bias == "prior":
        if class_counts is None:
            raise UserError("model.init_output_bias=prior needs the training labels. Fix: build the model with them")
        set_output_bias_to_prior(model, class_counts)
    elif init_bias != "none":
        raise UserError(f"model.init_output_bias={init_bias!r} is not known. Fix: none or prior")
    if not hasattr(model, "pretrained_weights"):
        model.pretrained_weights = None  # runner's own models, a user's callable: from scratch as far as runner knows
    return model


def without_pretrained_weights(model_cfg):
    """The model config with nothing to fetch (no hub weights, no weights file): for a model whose every weight
    comes from a checkpoint (a resumed run, the evaluator), so a node without internet or the file builds it."""
    from omegaconf import OmegaConf

    settings = OmegaConf.to_container(model_cfg, resolve=True) if OmegaConf.is_config(model_cfg) else model_cfg
    model_cfg = OmegaConf.create(settings)  # a copy
    for key, nothing in (("pretrained", False), ("weights", None), ("weights_path", None)):
        if key in model_cfg:
            model_cfg[key] = nothing
    return model_cfg


def instantiate_model(settings: dict) -> nn.Module:
    """Hydra's instantiate, a builder's one-line UserError passed on as it is: Hydra wraps every error of the
    called target in an InstantiationException, which the commands would show as 'Error executing job' and exit 1."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(settings)
    except InstantiationException as error:
        if isinstance(error.__cause__, UserError):
            raise error.__cause__ from None
        raise


def set_output_bias_to_prior(model: nn.Module, class_counts: torch.Tensor) -> None:
    layer = output_layer(model)
    if layer.bias is None:
        raise UserError("model.init_output_bias=prior: the output layer has no bias. Fix: model.init_output_bias=none")
    prior = class_counts.float().clamp_min(1) / class_counts.sum()
    with torch.no_grad():
        layer.bias.copy_(prior.log())


def output_layer(model: nn.Module) -> nn.Module:
    """The layer that produces the logits (its bias is the output bias); a model without a linear or convolution
    layer (a user's, of raw parameters) is its own output layer."""
    if hasattr(model, "get_classifier"):  # timm
        return model.get_classifier()
    if isinstance(getattr(model, "head_name", None), str):  # torchvision_model's new head
        return model.get_submodule(model.head_name)
    if hasattr(model, "fc"):
        return model.fc
    if hasattr(model, "head"):
        return model.head
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return layers[-1] if layers else model


def freeze_all_but_head(model: nn.Module | None, freeze: str) -> None:
    """model.freeze=backbone: only the output layer trains (model=None: only check the setting)."""
    one_of("model.freeze", freeze, FREEZE)
    if model is None or freeze == "none":
        return
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for parameter in output_layer(model).parameters():
        parameter.requires_grad_(True)


def one_source(pretrained: bool, weights_path, weights=None) -> None:
    """Pretrained weights from one place: the hub (pretrained / weights) or a file (weights_path), not both."""
    if weights_path is not None and (pretrained or weights is not None):
        fail("model.weights_path", weights_path, "is a second source of weights beside "
             + ("model.pretrained=true" if pretrained else f"model.weights={weights}"),
             "model.weights_path=null, or model.pretrained=false model.weights=null")


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(all, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def batch_norm_layers(model: nn.Module) -> list[str]:
    """The names of the model's BatchNorm layers (they normalize by the batch they are given)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def has_batch_norm(model: nn.Module) -> bool:
    return bool(batch_norm_layers(model))
