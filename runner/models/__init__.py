"""Models: `python -m runner model=NAME` (linear, mlp, lenet, convnet, resnet18, resnet50).

Each config's `_target_` names one factory below; `hydra.utils.instantiate(cfg.model)` builds
it. Every model maps (batch, channels, height, width) to (batch, num_classes) logits, and its
last layer is reachable through `output_layer(model)` (for freezing and bias init).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from runner.common.errors import UserError


def _pixels(in_channels: int, image_size) -> int:
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    return in_channels * height * width


class CheckpointedSequential(nn.Sequential):
    """nn.Sequential that recomputes each child's activations in backward (same state_dict keys)."""

    def forward(self, x):
        for module in self:
            x = checkpoint(module, x, use_reentrant=False) if self.training else module(x)
        return x


def linear(num_classes: int, in_channels: int, image_size) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(_pixels(in_channels, image_size), num_classes))


def mlp(num_classes: int, in_channels: int, image_size, hidden: int = 256, depth: int = 2,
        dropout: float = 0.0) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = _pixels(in_channels, image_size)
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def lenet(num_classes: int, in_channels: int, image_size) -> nn.Module:
    """LeNet-5 with 'same' padding, so it takes any image of at least 4x4 pixels."""
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * (height // 4) * (width // 4), 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, num_classes),
    )


class ResidualBlock(nn.Module):
    """Halves the resolution, changes the channels: two 3x3 convs with GroupNorm(1, c) and a 1x1 strided skip."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(1, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(1, out_channels)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False)

    def forward(self, x):
        y = torch.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return torch.relu(y + self.skip(x))


class ConvNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, channels: int, n_blocks: int,
                 activation_checkpointing: bool):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, 11, stride=2, padding=5, bias=False),
            nn.GroupNorm(1, channels),
            nn.ReLU(),
        )
        blocks = [ResidualBlock(channels * 2**i, channels * 2 ** (i + 1)) for i in range(n_blocks)]
        self.blocks = (CheckpointedSequential if activation_checkpointing else nn.Sequential)(*blocks)
        self.head = nn.Conv2d(channels * 2**n_blocks, num_classes, 1)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x))).mean(dim=(2, 3))


def convnet(num_classes: int, in_channels: int, channels: int = 32, n_blocks: int = 4,
            activation_checkpointing: bool = False) -> nn.Module:
    return ConvNet(num_classes, in_channels, channels, n_blocks, activation_checkpointing)


def resnet(depth: int, num_classes: int, in_channels: int = 3, pretrained: bool = False,
           weights_path: str | None = None, freeze: str = "none",
           activation_checkpointing: bool = False) -> nn.Module:
    """torchvision's ResNet-18/50 with a new `fc` for num_classes."""
    import torchvision

    factory = {18: torchvision.models.resnet18, 50: torchvision.models.resnet50}[depth]
    weights = None
    if pretrained:
        weights = {18: torchvision.models.ResNet18_Weights, 50: torchvision.models.ResNet50_Weights}[depth].DEFAULT
    try:
        model = factory(weights=weights)
    except Exception as error:  # a download that failed: no internet, a proxy, a full disk
        raise UserError(
            f"model.pretrained=true could not fetch torchvision's ResNet-{depth} weights ({error}). "
            "Fix: connect to the internet once, or download them yourself and set model.weights_path=FILE"
        ) from None
    if weights_path is not None:
        load_weights(model, weights_path)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    if activation_checkpointing:
        for name in ("layer1", "layer2", "layer3", "layer4"):
            setattr(model, name, CheckpointedSequential(*getattr(model, name)))
    if freeze == "backbone":
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        for parameter in model.fc.parameters():
            parameter.requires_grad_(True)
    elif freeze != "none":
        raise UserError(f"model.freeze={freeze!r} is not known. Fix: model.freeze=none or model.freeze=backbone")
    return model


def load_weights(model: nn.Module, path: str) -> None:
    """Weights from a state-dict file or a runner checkpoint; the classifier head is left out."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"model.weights_path={path!r} does not exist. Fix: give the path of a weights file")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(f"model.weights_path={path!r} could not be read ({error}). Fix: give a torch state dict file") from None
    state = state.get("model", state)
    state = {key: value for key, value in state.items() if not key.startswith("fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [key for key in missing if not key.startswith("fc.")]
    if missing or unexpected:
        raise UserError(
            f"model.weights_path={path!r} does not fit this model (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}). Fix: use weights saved from the same architecture"
        )


def build(cfg, class_counts: torch.Tensor | None = None) -> nn.Module:
    """The configured model; with init_output_bias=prior, its output bias set to log class frequencies.

    The practice: a classifier whose bias starts at the class prior begins at the loss of
    predicting the prior (its entropy) instead of paying for learning the imbalance first.
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    settings = OmegaConf.to_container(cfg, resolve=True)
    init_bias = settings.pop("init_output_bias", "none")
    model = instantiate(settings)
    if init_bias == "prior":
        if class_counts is None:
            raise UserError("model.init_output_bias=prior needs the training labels. Fix: build the model with them")
        set_output_bias_to_prior(model, class_counts)
    elif init_bias != "none":
        raise UserError(f"model.init_output_bias={init_bias!r} is not known. Fix: none or prior")
    return model


def set_output_bias_to_prior(model: nn.Module, class_counts: torch.Tensor) -> None:
    layer = output_layer(model)
    if layer.bias is None:
        raise UserError("model.init_output_bias=prior: the output layer has no bias. Fix: model.init_output_bias=none")
    prior = class_counts.float().clamp_min(1) / class_counts.sum()
    with torch.no_grad():
        layer.bias.copy_(prior.log())


def output_layer(model: nn.Module) -> nn.Module:
    """The layer that produces the logits (its bias is the output bias)."""
    if hasattr(model, "fc"):
        return model.fc
    if hasattr(model, "head"):
        return model.head
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]


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

