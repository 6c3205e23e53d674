"""The optimizer's parameter groups in `python -m runner finetune.lr_mult=10` or `optimizer.layer_decay=0.75`: each
trainable parameter's learning rate and weight decay.

    optimizer.no_decay_norm_and_bias  every 1-D parameter (biases, norm layers' scale and shift) and the model's
                                      own no_weight_decay() names (timm: position embeddings, class tokens) get
                                      weight decay 0 (timm's rule); false: the optimizer's weight decay on all
    finetune.lr_mult (fastai's split) the head at optimizer.lr, the body at optimizer.lr / lr_mult
    optimizer.layer_decay (timm's)    layer i of L (0: the input's, L - 1: the head's) at
                                      optimizer.lr x layer_decay ** (L - 1 - i)

The head is runner.models.output_layer(model). The layers: a timm model orders its own (group_matcher, as timm's
param_groups_layer_decay reads it); any other model is ordered by its top-level children (`layer_ids`).

The groups are the same for the whole run (a frozen body keeps its group and simply gets no gradient), so the
optimizer is built once, its state survives the unfreeze, and every checkpoint's optimizer state has the same
groups. Group 0 is always at optimizer.lr: what the log and TensorBoard report as the run's learning rate.
"""

from __future__ import annotations

import fnmatch

from torch import nn

from runner.models import output_layer


def parameter_groups(model: nn.Module, lr: float, no_decay_norm_and_bias: bool = True,
                     layer_decay: float | None = None, lr_mult: float = 1.0) -> list[dict]:
    """torch.optim groups over the parameters that require grad: {"name", "params", "lr"} and, where it is none,
    "weight_decay": 0.0 (the others take the optimizer's). The highest learning rate first."""
    head = {id(p) for p in output_layer(model).parameters()}
    layers = layer_ids(model) if layer_decay is not None else {}
    last_layer = max(layers.values(), default=0)
    no_decay = no_weight_decay_names(model) if no_decay_norm_and_bias else set()
    groups: dict[tuple, dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:  # model.freeze=backbone: never trained
            continue
        part, scale = "all", 1.0
        if layer_decay is not None:
            layer = last_layer if id(parameter) in head else layers.get(name, last_layer)
            part, scale = ("head" if layer == last_layer else f"layer {layer}"), layer_decay ** (last_layer - layer)
        elif lr_mult != 1:
            part, scale = ("head", 1.0) if id(parameter) in head else ("body", 1 / lr_mult)
        decays = name not in no_decay
        group = groups.setdefault((part, decays), {"name": part if decays else f"{part}, no weight decay",
                                                   "params": [], "lr": lr * scale})
        group["params"].append(parameter)
        if not decays:
            group["weight_decay"] = 0.0
    return sorted(groups.values(), key=lambda group: -group["lr"])  # stable: the model's order within a rate


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """The parameters that get no weight decay: every 1-D one (biases, norm layers' scale and shift) and the
    model's own no_weight_decay() names, which may hold wildcards (timm's: pos_embed, cls_token)."""
    own = getattr(model, "no_weight_decay", None)
    patterns = set(own()) if callable(own) else set()
    return {name for name, parameter in model.named_parameters()
            if parameter.ndim <= 1 or name.endswith(".bias") or any(fnmatch.fnmatch(name, p) for p in patterns)}


def layer_ids(model: nn.Module) -> dict[str, int]:
    """Each parameter's layer, from 0 (the input's) to the head's (the last).

    A timm model names its blocks (group_matcher). Any other model: its top-level children in order, the head
    last; a Sequential or ModuleList of blocks (torchvision's layer1..4) gives each block a layer of its own; a
    norm layer joins the layer before it (conv1 + bn1: the stem); the model's own parameters (not in a child)
    belong to layer 0. torchvision's ResNets get timm's layers for its ResNets this way."""
    if hasattr(model, "group_matcher"):
        from timm.models import group_parameters

        return group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    head = output_layer(model)
    layers: list[list[str]] = [[name for name, _ in model.named_parameters(recurse=False)]]
    for prefix, module in blocks_in_order(model, head):
        names = [f"{prefix}.{name}" for name, _ in module.named_parameters()]
        if is_norm(module) and layers[-1]:
            layers[-1] += names
        else:
            layers.append(names)
    layers = [names for names in layers if names]
    head_names = {name for name, p in model.named_parameters() if any(p is q for q in head.parameters())}
    ids = {name: index for index, names in enumerate(layers) for name in names if name not in head_names}
    last = max(ids.values(), default=-1) + 1
    return {name: ids.get(name, last) for name, _ in model.named_parameters()}


def blocks_in_order(model: nn.Module, head: nn.Module) -> list[tuple[str, nn.Module]]:
    """(dotted name, module) of the top-level children with parameters, a Sequential or ModuleList's children
    each on its own; the head left out (it comes last)."""
    found = []
    for name, child in model.named_children():
        if child is head:
            continue
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            found += [(f"{name}.{inner}", block) for inner, block in child.named_children() if block is not head]
        else:
            found.append((name, child))
    return [(name, module) for name, module in found if any(True for _ in module.parameters())]


NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def is_norm(module: nn.Module) -> bool:
    """A normalization layer: torch's, and those of other libraries named so (timm's RmsNorm, LayerNorm2d)."""
    return isinstance(module, NORMS) or type(module).__name__.endswith(("Norm", "Norm1d", "Norm2d", "Norm3d"))
