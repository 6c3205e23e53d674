"""Models for the checks' tests, named as a user's own: `python -m runner.check model._target_=tests.byo_check_models.small_cnn`.

Not part of runner: healthy architectures the stock configs lack (a plain CNN with max-pool,
conv-BN-ReLU-Dropout) and models with a bug planted in their own __init__ (hidden layers frozen
at their random initial values), for tests/test_checks_healthy.py and tests/test_checks_fit_causes.py.
"""

from __future__ import annotations

from torch import nn


def _pixels(in_channels: int, image_size) -> int:
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    return in_channels * height * width


def small_cnn(num_classes: int, in_channels: int, image_size=None) -> nn.Module:
    """conv16, conv32, global max-pool, linear: the plain small CNN of many tutorials."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(32, num_classes),
    )


def conv_bn_relu_dropout(num_classes: int, in_channels: int, image_size=None, dropout: float = 0.5) -> nn.Module:
    """Two blocks of conv (no bias: BatchNorm's shift replaces it), BatchNorm, ReLU, Dropout, in the usual order."""
    def block(inputs: int, outputs: int) -> list[nn.Module]:
        return [nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU(),
                nn.Dropout(dropout)]

    return nn.Sequential(*block(in_channels, 16), *block(16, 32), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(32, num_classes))


def frozen_mlp(num_classes: int, in_channels: int, image_size, hidden: int = 64) -> nn.Module:
    """A planted bug: the hidden layers are frozen in __init__ at their random initial values."""
    hidden_layers = nn.Sequential(nn.Flatten(), nn.Linear(_pixels(in_channels, image_size), hidden), nn.ReLU(),
                                  nn.Linear(hidden, hidden), nn.ReLU())
    hidden_layers.requires_grad_(False)
    return nn.Sequential(hidden_layers, nn.Linear(hidden, num_classes))


def frozen_cnn(num_classes: int, in_channels: int, image_size=None) -> nn.Module:
    """A planted bug: small_cnn's convolutions are frozen in __init__ at their random initial values."""
    model = small_cnn(num_classes, in_channels)
    for layer in list(model)[:4]:
        layer.requires_grad_(False)
    return model
