"""The order in which one batch flows through the model's layers: the normalization check of `python -m runner.check checks=[normalization]`.

BatchNorm subtracts its input's per-channel mean, so a bias in the conv or linear layer right
before it is removed again (a wasted parameter: bias=False there). A dropout before it makes the
statistics BatchNorm learns in training (on dropped-out activations) differ from what it sees in
eval, where nothing is dropped (the "variance shift"): the usual order is conv(bias=False),
BatchNorm, ReLU, dropout. The order is read from a forward-hook trace of one batch, which layer's
output each layer received, so it holds for any forward() and not only for nn.Sequential.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# layers that change each value on its own: a dropout before them still reaches the BatchNorm after
ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Mish, nn.Hardswish, nn.Tanh,
               nn.Sigmoid, nn.Identity, nn.Flatten)


@dataclass
class Call:
    name: str
    module: nn.Module
    source: int | None  # the index of the call whose output is this call's first input; None: not a layer's


def trace(model: nn.Module, x: torch.Tensor) -> list[Call]:
    """The layers (modules without children) in the order one batch calls them, each with the call
    whose output it received. Outputs are kept alive so that no tensor's id is reused meanwhile."""
    names = {module: name for name, module in model.named_modules()}
    calls: list[Call] = []
    producer: dict[int, int] = {}
    kept: list[torch.Tensor] = []

    def record(module, inputs, output):
        first = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        calls.append(Call(names[module], module, None if first is None else producer.get(id(first))))
        if isinstance(output, torch.Tensor):  # an in-place layer returns its input: it is now the producer
            producer[id(output)] = len(calls) - 1
            kept.append(output)

    handles = [m.register_forward_hook(record) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model.train()(x)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def dropout_before(calls: list[Call], index: int) -> Call | None:
    """The dropout whose output reaches call `index`, directly or through elementwise layers."""
    source = calls[index].source
    while source is not None:
        module = calls[source].module
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            return calls[source]
        if not isinstance(module, ELEMENTWISE):
            return None
        source = calls[source].source
    return None


def batchnorm_order(model: nn.Module, x: torch.Tensor) -> list[str]:
    """What the layers right before each BatchNorm undo or disturb, one finding each (none in the
    usual order)."""
    calls = trace(model, x)
    findings = []
    for index, call in enumerate(calls):
        if not isinstance(call.module, nn.modules.batchnorm._BatchNorm):
            continue
        before = None if call.source is None else calls[call.source]
        if (before is not None and isinstance(before.module, (nn.modules.conv._ConvNd, nn.Linear))
                and before.module.bias is not None):
            findings.append(f"{type(before.module).__name__} {before.name} has a bias that BatchNorm {call.name} "
                            "removes: bias=False there")
        dropout = dropout_before(calls, index)
        if dropout is not None:
            findings.append(f"dropout {dropout.name} before BatchNorm {call.name} shifts its statistics between "
                            "train and eval: put the dropout after the BatchNorm")
    return list(dict.fromkeys(findings))  # a layer called twice is named once
