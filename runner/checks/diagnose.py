"""Why a model does not learn, named from evidence: the fix of `overfit_batch` and `input_independent` in
`python -m runner.check`.

Each rule reads one piece of evidence (evidence.py) from the trained model, its batch or the configured
loss and names the cause it shows; the rules run in the order of the bug most likely behind such
evidence, and the first that fires gives the verdict and the fix. Learning-rate advice is the last
rule, for a failure no evidence explains; a fit still falling steadily is told to take more steps.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from runner.checks import evidence
from runner.checks.evidence import FitPoint
from runner.checks.model import frozen_at_random_values, listed
from runner.checks.setup import Setup

Finding = tuple[str, str]  # (verdict, fix)


@dataclass
class Trained:
    """A model after a check's short training, and the batch it is judged on."""

    setup: Setup
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor

    @functools.cached_property
    def logits(self) -> torch.Tensor:
        self.model.eval()
        with torch.no_grad():
            return self.model(self.x).float()


@dataclass
class Fit(Trained):
    """overfit_batch's fit: the batch's loss, accuracy and logit span as the updates went, and the loss's floor."""

    points: list[FitPoint] = field(default_factory=list)
    floor: float = 0.0

    @property
    def first(self) -> FitPoint:
        return self.points[0]

    @property
    def last(self) -> FitPoint:
        return self.points[-1]


# ---- rules that hold for any trained model: the loss, the units, the frozen tensors, the input's scale ----

def loss_sign(trained: Trained) -> Finding | None:
    probe = evidence.rewards_wrong_answers(trained.setup)
    if probe is None:
        return None
    if not isinstance(trained, Fit):
        return "FAIL", probe
    return "FAIL", (f"the loss falls while accuracy falls (loss {trained.first.loss:.3g} -> {trained.last.loss:.3g}, "
                    f"accuracy {100 * trained.first.accuracy:.0f}% -> {100 * trained.last.accuracy:.0f}% where a fit "
                    f"reaches 100%): {probe}")


def clipped_loss(trained: Trained) -> Finding | None:
    wrong, silent = evidence.zero_gradient_samples(trained.setup, trained.logits, trained.y)
    if not silent:
        return None
    level = max(silent)
    if max(silent) - min(silent) <= 1e-6 * (1 + abs(level)):  # one value: the loss is flat there, a clip
        return "FAIL", (f"the loss is clipped: samples above {round(level, 4)} give no gradient ({len(silent)} of the "
                        f"{wrong} samples still wrong sit at exactly {round(level, 4)} with zero gradient, so they "
                        "never learn). Fix: remove the clamp from the loss; to tame outliers clip the gradients "
                        "(trainer.grad_clip_norm=1.0)")
    return "FAIL", (f"{len(silent)} of the {wrong} samples still wrong get exactly zero gradient from the loss "
                    f"(at losses {min(silent):.3g}..{level:.3g}): it ignores them (a clamp, a where or a detach in "
                    "the loss). Fix: a loss that gives every wrong answer a gradient")


def symmetric_units(trained: Trained) -> Finding | None:
    found = evidence.identical_units(trained.model)
    if found is None:
        return None
    name, kind, units = found
    return "FAIL", (f"symmetric init: identical units in layer {name} ({kind}: its {units} units have the same weights after "
                    "training: started equal, they get equal gradients and compute one feature). Cause: an "
                    "initialisation that fills the weights with one value. Fix: random initial weights (PyTorch's "
                    "defaults, or nn.init.kaiming_uniform_)")


def frozen_tensors(trained: Trained) -> Finding | None:
    if trained.setup.cfg.model.get("freeze", "none") not in (None, "none"):
        return None  # declared: gradients_flow judges a declared freeze
    frozen = frozen_at_random_values(trained.setup, trained.model)
    if not frozen:
        return None
    learning = [name for name, p in trained.model.named_parameters() if p.requires_grad]
    return "FAIL", (f"{len(frozen)} tensors frozen at their initial values ({listed(frozen)}): the model can only "
                    f"train {listed(learning) or 'nothing'}, on top of random features. Fix: drop requires_grad_(False) "
                    "for them, or load trained weights into them before freezing (model.freeze= with model.pretrained)")


def input_scale(trained: Trained) -> Finding | None:
    found = evidence.first_layer_input_scale(trained.model, trained.x)
    if found is None or found[1] == 0 or 0.1 <= found[1] <= 10:  # no input at all: ignores_its_input names it
        return None
    name, ratio = found
    scale = f"~1/{1 / ratio:.0f}" if ratio < 1 else f"~{ratio:.0f}x"
    return "FAIL", (f"the first layer sees inputs {scale} of the data's scale (the input of {name} spreads "
                    f"{ratio:.2g} times as wide as the images): the model rescales its input again (x / 255 on images already "
                    "standardized by dataset.mean/std). Fix: remove the rescaling in forward")


SHARED_RULES = [loss_sign, clipped_loss, symmetric_units, frozen_tensors, input_scale]


# ---- overfit_batch ----

def probabilities_out(fit: Fit) -> Finding | None:
    logits, rows = fit.logits, fit.logits.sum(dim=1)
    if (logits >= 0).all() and (logits <= 1).all() and torch.allclose(rows, torch.ones_like(rows), atol=1e-3):
        return "FAIL", ("the model outputs probabilities (every row sums to 1), and the loss wants raw logits. "
                        "Fix: remove the softmax at the end of the model (the loss applies log-softmax itself)")
    return None


def unbounded_loss(fit: Fit) -> Finding | None:
    if math.isfinite(fit.floor):
        return None
    return "FAIL", (f"the loss has no floor: it falls without bound as the logits grow ({fit.first.loss:.3g} -> "
                    f"{fit.last.loss:.3g}), so no fit ends. Fix: a loss bounded below (built on log-softmax, such as "
                    "cross_entropy)")


def constant_outputs(fit: Fit) -> Finding | None:
    if float(fit.logits.std(dim=0).max()) >= 1e-5 * (1 + float(fit.logits.abs().max())):
        return None
    return "FAIL", ("the outputs do not vary across samples: every input gets the same answer, so only the class "
                    "frequencies are learned. Causes: all weights start equal (a constant or symmetric "
                    "initialisation), or the input never reaches the output. Fix: random initial weights "
                    "(PyTorch's defaults), and a forward pass that uses x")


def stopped_gradients(fit: Fit) -> Finding | None:
    stopped, learning = parameters_by_gradient(fit.setup, fit.model, fit.x, fit.y)
    if not (stopped and learning):
        return None
    return "FAIL", (f"gradients stop inside the model: {', '.join(stopped[:4])} get no gradient while the layers after "
                    "them do. Cause: a step without a gradient between them and the output (round, argmax, a "
                    "comparison, .detach(), a cast to an integer). Fix: a differentiable operation there")


def near_floor(fit: Fit) -> str:
    """WARN when every sample is right and the loss is within 0.5 of its floor, else FAIL."""
    return "WARN" if fit.last.accuracy == 1.0 and fit.last.loss < fit.floor + 0.5 else "FAIL"


def capped_logits(fit: Fit) -> Finding | None:
    if fit.last.accuracy < 1.0 or evidence.span_grows(fit.points):
        return None
    middle = fit.points[len(fit.points) // 2]
    return near_floor(fit), (f"accuracy 100% but the loss stays at {fit.last.loss:.3f}, above its floor "
                             f"{fit.floor:.3f}: the logits are capped (their span stopped widening: {middle.span:.2f} "
                             f"at step {middle.step}, {fit.last.span:.2f} at step {fit.last.step}). Cause: a clamp, "
                             "tanh, sigmoid or min on the output. Fix: return unbounded logits")


def more_steps(fit: Fit) -> Finding | None:
    if not evidence.still_falling(fit.points, fit.floor):
        return None
    needed = evidence.steps_to_floor(fit.points, fit.floor, margin=0.05) or 2 * fit.last.step
    suggested = 100 * math.ceil(1.2 * needed / 100)  # a round number with a margin over the extrapolation
    shrink = evidence.gap_shrink(fit.points, fit.floor)
    return "WARN", (f"the loss still falls steadily ({fit.first.loss:.3f} -> {fit.last.loss:.4f} in {fit.last.step} "
                    f"steps; the last quarter took {100 * shrink:.0f}% off its distance to the floor) and no bug shows "
                    f"in the evidence: it needs more steps: checks.overfit_steps={suggested} (about {needed} at this "
                    "rate), or a larger checks.overfit_lr")


def chance_plateau(fit: Fit) -> Finding | None:
    chance = math.log(fit.setup.num_classes)
    if abs(fit.last.loss - chance) >= 0.05 * chance:
        return None
    return "FAIL", (f"the loss stays at ln({fit.setup.num_classes}) = {chance:.3f}: the outputs carry nothing about "
                    "the labels. Fix: check that the labels belong to the inputs and that the loss gets the model's "
                    "logits")


def too_slow(fit: Fit) -> Finding:
    return near_floor(fit), (f"the loss went {fit.first.loss:.3f} -> {fit.last.loss:.4f} in {fit.last.step} steps, "
                             f"short of its floor {fit.floor:.3f}, and stopped falling steadily; no bug shows in the "
                             "evidence (outputs, gradients, units, frozen tensors, the loss's sign and clip, input "
                             "scale, logit span). Fix: a larger checks.overfit_lr (try 10x), more "
                             "checks.overfit_steps, or a model with more capacity")


FIT_RULES: list[Callable[[Fit], Finding | None]] = [
    probabilities_out, loss_sign, unbounded_loss, clipped_loss, constant_outputs, symmetric_units, frozen_tensors,
    stopped_gradients, input_scale, capped_logits, more_steps, chance_plateau,
]


def why_it_does_not_fit(fit: Fit) -> Finding:
    """(verdict, fix) of a failed overfit_batch: the first rule whose evidence shows a cause."""
    for rule in FIT_RULES:
        finding = rule(fit)
        if finding is not None:
            return finding
    return too_slow(fit)


def parameters_by_gradient(setup, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[list[str], list[str]]:
    """(trainable parameters whose gradient on the batch is missing or zero, those that get one); in eval
    mode: the whole batch in one pass is not what training runs (BatchNorm on its micro-batch)."""
    model.eval()
    model.zero_grad(set_to_none=True)
    setup.mean_loss(model(x), y).backward()
    stopped, learning = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (learning if p.grad is not None and bool(p.grad.any()) else stopped).append(name)
    model.zero_grad(set_to_none=True)
    return stopped, learning


# ---- input_independent ----

def ignores_its_input(model: nn.Module, x: torch.Tensor) -> bool:
    """Does the model give the same outputs whatever the input (real images against other real images)?"""
    model.eval()
    with torch.no_grad():
        return torch.allclose(model(x), model(x.roll(1, dims=0)), atol=1e-6)


def why_inputs_do_not_help(trained: Trained, train_real: float, train_zeroed: float) -> str:
    """The cause of a failed input_independent: the loss, the units, frozen tensors or the input's scale where
    the evidence shows one; else an output that ignores the input, labels that do not belong to the images,
    or a training too short to learn from them."""
    for rule in SHARED_RULES:
        finding = rule(trained)
        if finding is not None:
            return finding[1]
    if ignores_its_input(trained.model, trained.x):
        return ("the model's output does not depend on its input (other images give the same outputs). "
                "Fix: a forward pass that reads x all the way to the output")
    if train_real < train_zeroed - 0.1 * abs(train_zeroed):
        return (f"the model learns the training samples from their inputs (training loss {train_real:.3f} against "
                f"{train_zeroed:.3f} with zeroed inputs) but that does not carry to validation: the training labels "
                "may not belong to their images (shuffled apart), or train and validation differ. Fix: check the "
                "label mapping of the training split (python -m runner.inspect_data shows images with their labels)")
    return (f"the short training learned nothing from the inputs (training loss {train_real:.3f} against "
            f"{train_zeroed:.3f} with zeroed inputs): the labels may not belong to the images, or the learning "
            "rate is too low for checks.baseline_steps updates. Fix: check the labels with python -m "
            "runner.inspect_data, then the learning rate with python -m runner.lr_find")
