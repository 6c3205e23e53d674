"""Staged fine-tuning in `python -m runner finetune.freeze_epochs=3 finetune.lr_mult=10`: the new head trains alone
for the first epochs, then everything trains (the loop calls `enter_stage` at the start of each epoch).

In the frozen stage the body's parameters do not require grad, so backward skips them and the optimizer, which
holds every parameter from the start (param_groups.py), leaves them bit-unchanged: torch's optimizers skip a
parameter without a gradient, weight decay and momentum included. The body's BatchNorm layers stay in eval mode,
so their running statistics (the pretrained ones) are kept; with finetune.train_norm the norm layers' scale and
shift train too. The stage is a pure function of the epoch, set again at the start of every epoch (and on resume,
also from a mid-epoch checkpoint), so a resumed run is the uninterrupted one across the boundary.

The checks (runner.check) and lr_find build the model as configured and ignore the stages.
"""

from __future__ import annotations

import logging

from torch import nn

from runner.models import output_layer
from runner.training.param_groups import is_norm

log = logging.getLogger(__name__)


def enter_stage(run, epoch: int, first: bool = False) -> bool:
    """The stage of `epoch` for run.model (frozen body or all trainable); True when the parameters that train
    changed, so the caller wraps the model again (DDP registers the parameters that train when it is built).
    Logged where it changes, and at the run's `first` epoch (a resume past the frozen stage changes nothing)."""
    settings = run.finetune
    frozen = epoch < settings.freeze_epochs
    trained = [p for group in run.optimizer.param_groups for p in group["params"]]
    changed = set_stage(run.model, trained, frozen, settings.train_norm)
    if changed or (first and settings.freeze_epochs > 0):
        log_stage(run, epoch, frozen, trained)
    return changed


def set_stage(model: nn.Module, trained: list[nn.Parameter], frozen: bool, train_norm: bool) -> bool:
    """requires_grad of the optimizer's parameters (`trained`) for the stage, and the body's BatchNorm in eval mode
    while frozen (call after model.train()); returns whether requires_grad changed anywhere."""
    head = output_layer(model)
    keep_training = {id(p) for p in head.parameters()}
    if train_norm:
        keep_training |= {id(p) for module in model.modules() if is_norm(module) for p in module.parameters()}
    changed = False
    for parameter in trained:
        wanted = not frozen or id(parameter) in keep_training
        changed |= parameter.requires_grad != wanted
        parameter.requires_grad_(wanted)
    if frozen:
        in_head = {id(m) for m in head.modules()}
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and id(module) not in in_head:
                module.eval()  # normalizes with, and keeps, its running statistics
    return changed


def log_stage(run, epoch: int, frozen: bool, trained: list[nn.Parameter]) -> None:
    """One line where the stage changes: what trains, and at which learning rates."""
    training = sum(p.numel() for p in trained if p.requires_grad)
    if frozen:
        last = run.finetune.freeze_epochs
        epochs = f"epoch {epoch + 1}" if last == epoch + 1 else f"epochs {epoch + 1}-{last}"
        what = "the head and the norm layers" if run.finetune.train_norm else "the head"
        log.info("%s: the body frozen (its BatchNorm statistics kept): %s of %s parameters train (%s)", epochs,
                 f"{training:,}", f"{sum(p.numel() for p in trained):,}", what)
        return
    head = {id(p) for p in output_layer(run.model).parameters()}
    body_lrs = {group["lr"] for group in run.optimizer.param_groups if any(id(p) not in head for p in group["params"])}
    head_lr = max(group["lr"] for group in run.optimizer.param_groups)
    body = f"{min(body_lrs):g}" if len(body_lrs) == 1 else f"{min(body_lrs):g} to {max(body_lrs):g}"
    log.info("epoch %d: the body unfrozen: %s parameters now train, body lr %s, head %g", epoch + 1,
             f"{training:,}", body, head_lr)
