"""Any torchvision classification model by name: `python -m runner model=torchvision model.name=resnet50 model.weights=IMAGENET1K_V2`.

The family's classifier (fc, classifier[-1], heads.head, ...: the last Linear/Conv2d) is replaced by one
for num_classes; a stem of another channel count is made new (from scratch) or adapted from the
pretrained filters by timm's rule (runner/models/stems.py). Weights come from torchvision's own
download into the torch hub cache (TORCH_HOME, or RUNNER_WEIGHTS), or from `model.weights_path`.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from runner.common.errors import UserError
from runner.common.rules import fail
from runner.models import names
from runner.models import weights as weights_module
from runner.models.building import freeze_all_but_head, one_source
from runner.models.own import CheckpointedSequential
from runner.models.stems import set_input_channels

# their auxiliary classifiers make train-mode outputs tuples; the practice's fine-tuning recipes drop them
WITHOUT_AUX = {"googlenet": {"aux_logits": False}, "inception_v3": {"aux_logits": False}}


def torchvision_model(name: str, num_classes: int, in_channels: int, weights: str | None = None,
                      pretrained: bool = False, weights_path: str | None = None, freeze: str = "none",
                      activation_checkpointing: bool = False, drop_rate: float | None = None,
                      drop_path_rate: float | None = None) -> nn.Module:
    """torchvision's `name` (weights: an enum member such as IMAGENET1K_V2; pretrained=true means DEFAULT).

    drop_rate / drop_path_rate: the architecture's own `dropout` / `stochastic_depth_prob` where it has them
    (REGULARIZATION); None (the default) keeps torchvision's default for the architecture."""
    import torchvision

    member = check_torchvision_settings(name, weights, pretrained, weights_path, freeze)
    regularization = regularization_arguments(name, drop_rate, drop_path_rate)
    record = None
    if member is not None:
        weights_module.use_weights_home()
        try:
            model = torchvision.models.get_model(name, weights=member, **WITHOUT_AUX.get(name, {}), **regularization)
        except Exception as error:  # no internet and nothing cached, a proxy, a full disk
            raise weights_module.fetch_failed(f"torchvision {name} {member.name}", error) from None
        record = weights_module.hub_record(f"{name} {type(member).__name__}.{member.name}", "torchvision",
                                         weights_module.url_cached_file(member.url))
    else:
        model = torchvision.models.get_model(name, weights=None, **WITHOUT_AUX.get(name, {}), **regularization)
    model.head_name = replace_head(model, num_classes)
    set_input_channels(model, in_channels, adapt=member is not None, model_name=name)
    if weights_path is not None:
        record = weights_module.load_weights_file(model, weights_path, (model.head_name + ".",), name=name)
    if activation_checkpointing:
        checkpoint_blocks(model, name)
    freeze_all_but_head(model, freeze)
    model.pretrained_weights = record
    return model


def check_torchvision_settings(name, weights, pretrained: bool, weights_path, freeze: str):
    """The settings' problems a user can fix, each one line; the weights enum member to start from, or None."""
    names.check_name("torchvision", name)
    member = names.weights_member(name, weights) if weights is not None else None
    one_source(pretrained, weights_path, weights)
    freeze_all_but_head(None, freeze)
    if member is None and pretrained:
        member = names.weights_member(name, "DEFAULT")
    return member


# runner's knob -> the keyword torchvision's builders take, and the families (torchvision.models' modules) that have it
REGULARIZATION = {
    "drop_rate": ("dropout", {"alexnet", "efficientnet", "googlenet", "inception", "maxvit", "mnasnet", "mobilenetv2",
                              "mobilenetv3", "squeezenet", "swin_transformer", "vgg", "vision_transformer"}),
    "drop_path_rate": ("stochastic_depth_prob", {"convnext", "efficientnet", "maxvit", "swin_transformer"}),
}


def regularization_arguments(name: str, drop_rate: float | None, drop_path_rate: float | None) -> dict:
    """{torchvision's keyword: rate} for the knobs set; one not in `name`'s family is a one-line refusal."""
    import torchvision

    family = torchvision.models.get_model_builder(name).__module__.rsplit(".", 1)[-1]
    arguments = {}
    for key, value in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):
        if value is None:
            continue
        keyword, families = REGULARIZATION[key]
        if family not in families:
            fail(f"model.{key}", value, f"is not a setting of torchvision's {name} (it has no {keyword})",
                 f"drop it (~model.{key}), or the same model through model=timm, where every architecture takes it")
        arguments[keyword] = float(value)
    return arguments


def replace_head(model: nn.Module, num_classes: int) -> str:
    """Put a new classifier for num_classes where the last Linear/Conv2d was; returns its dotted name."""
    name, old = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    if isinstance(old, nn.Linear):
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    else:  # squeezenet: a 1x1 conv to the classes, then a global average
        new = nn.Conv2d(old.in_channels, num_classes, old.kernel_size, old.stride, old.padding,
                        bias=old.bias is not None)
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)
    return name


# the blocks to recompute in backward, by family (their children keep their names, so state dicts are unchanged)
BLOCKS = ("layer1", "layer2", "layer3", "layer4", "features", "trunk_output", "encoder.layers")


def checkpoint_blocks(model: nn.Module, name: str) -> None:
    found = [path for path in BLOCKS if has_sequential(model, path)]
    if not found:
        fail("model.activation_checkpointing", True, f"is not supported for torchvision's {name}",
             "model.activation_checkpointing=false, or the same model through model=timm")
    for path in found:
        parent, _, leaf = path.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, leaf, CheckpointedSequential(OrderedDict(getattr(owner, leaf).named_children())))


def has_sequential(model: nn.Module, path: str) -> bool:
    try:
        return type(model.get_submodule(path)) is nn.Sequential
    except AttributeError:
        return False


def resnet(depth: int, num_classes: int, in_channels: int = 3, pretrained: bool = False,
           weights_path: str | None = None, freeze: str = "none",
           activation_checkpointing: bool = False) -> nn.Module:
    """torchvision's ResNet-18/50 (the configs and checkpoints before model=torchvision name this one)."""
    if depth not in (18, 50):
        raise UserError(f"model.depth={depth!r} is not a ResNet runner builds. Fix: model.depth=18 or 50, "
                        f"or model=torchvision model.name=resnet{depth}")
    return torchvision_model(f"resnet{depth}", num_classes, in_channels, pretrained=pretrained,
                             weights_path=weights_path, freeze=freeze,
                             activation_checkpointing=activation_checkpointing)
