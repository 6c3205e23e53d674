"""Distill an ensemble into one network: `python -m runner loss=distill loss.teachers=[RUN_A,RUN_B:best] loss.temperature=4 loss.alpha=0.9`.

A teacher is a run folder (RUN, or RUN:best: the checkpoint its eval/best.json names, with the weights that
row was measured with: raw, or the run's EMA/SWA average) or a checkpoint file (its raw weights). Each is
loaded once at the start, by the evaluator's rules (runner/common/trust.py: a saved config that names an
untrusted callable is refused; evaluate.trust=[...] trusts a module), built from its own saved config, and
kept in eval mode beside the student: never a part of the student's model, so never in its checkpoints,
which name the teachers (loss.teachers in the saved config; `teachers_record`: file and sha256).

On each micro-batch the teachers see the student's very images (augmented, mixed) under
torch.inference_mode in the training's precision, and the student's per-sample loss is

    alpha * T^2 * KL(p_teachers || softmax(student / T)) + (1 - alpha) * CE(student, targets)

with p_teachers the mean over the teachers of softmax(teacher / T) (Hinton et al. 2015; T^2 keeps the soft
term's gradients at the scale of the hard one's). Targets are labels or mixup's per-class probabilities.
Teachers in eval mode draw no random numbers, so a resumed run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from runner.training.teachers import (
    load_teacher,
    measure_swa_statistics,
    teacher_file,
    teacher_model,
)

# ---------------------------------------------------------------------------------------------
# the loss


def distillation_loss(student_logits: torch.Tensor, targets: torch.Tensor, teacher_probs: torch.Tensor,
                      temperature: float, alpha: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-sample alpha * T^2 * KL(teacher_probs || softmax(student / T)) + (1 - alpha) * CE(student, targets)."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    kl = (torch.xlogy(teacher_probs, teacher_probs) - teacher_probs * log_student).sum(dim=1)  # 0 log 0 = 0
    ce = F.cross_entropy(student_logits, targets, reduction="none", label_smoothing=label_smoothing)
    return alpha * temperature**2 * kl + (1 - alpha) * ce


class Distillation:
    """loss=distill as the loop holds it: step.micro_batch_loss sees `needs_inputs` and calls `with_inputs`
    with the micro-batch's images, which the teachers predict; the result is a plain (logits, targets) loss.

    Called directly (logits, targets), without images (runner.check's probes of the loss on made-up logits),
    it is its label term alone: the cross-entropy with its label smoothing."""

    needs_inputs = True

    def __init__(self, teachers: list[nn.Module], temperature: float, alpha: float, label_smoothing: float = 0.0):
        self.teachers = [teacher.eval().requires_grad_(False) for teacher in teachers]
        self.temperature, self.alpha, self.label_smoothing = float(temperature), float(alpha), float(label_smoothing)
        self.device = torch.device("cpu")  # the teachers' (checkpoints load on the CPU); moved once, on first use

    def teacher_probabilities(self, x: torch.Tensor, amp_dtype: torch.dtype | None) -> torch.Tensor:
        """The mean over the teachers of softmax(teacher(x) / T), in fp32, without autograd history."""
        if x.device != self.device:
            self.teachers = [teacher.to(x.device) for teacher in self.teachers]
            self.device = x.device
        with torch.inference_mode(), torch.autocast(x.device.type, dtype=amp_dtype or torch.float32,
                                                    enabled=amp_dtype is not None):
            probs = sum(torch.softmax(teacher(x).float() / self.temperature, dim=1) for teacher in self.teachers)
            probs = probs / len(self.teachers)
        return probs.clone()  # an ordinary tensor: autograd may keep it for the student's backward

    def with_inputs(self, x: torch.Tensor, amp_dtype: torch.dtype | None):
        """The loss of this micro-batch: (student logits, targets) -> per-sample losses."""
        probs = self.teacher_probabilities(x, amp_dtype)
        return lambda logits, targets: distillation_loss(logits, targets, probs, self.temperature, self.alpha,
                                                         self.label_smoothing)

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, reduction="none", label_smoothing=self.label_smoothing)


def distillation(teachers=(), temperature: float = 4.0, alpha: float = 0.9, label_smoothing: float = 0.0,
                 trusted=()) -> Distillation:
    """conf/loss/distill.yaml's `_target_`: the teachers loaded and built (losses.build_loss calls it)."""
    built = []
    for given in teachers:
        found = teacher_file(str(given))
        config, weights = load_teacher(found, trusted)
        model = teacher_model(config, weights, found.checkpoint)
        if found.weights == "swa":
            measure_swa_statistics(model, config, found)
        built.append(model)
    return Distillation(built, temperature, alpha, label_smoothing)


def build(loss_cfg: DictConfig) -> Distillation:
    """losses.build_loss's for loss=distill: trusting what the run's evaluator trusts (evaluate.trust)."""
    root = loss_cfg._get_root() if OmegaConf.is_config(loss_cfg) else {}
    trusted = list(OmegaConf.select(root, "evaluate.trust", default=None) or []) if OmegaConf.is_config(root) else []
    settings = {key: value for key, value in OmegaConf.to_container(loss_cfg, resolve=True).items()
                if not key.startswith("_")}
    return distillation(**settings, trusted=trusted)


# ---------------------------------------------------------------------------------------------
# scripts/benchmark.py: what distillation adds to a step


def step_seconds(loss: Distillation, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 amp_dtype: torch.dtype | None = None, repeats: int = 5) -> dict:
    """{"teacher_forward": s, "student_step": s}: the median seconds of the teachers' forward on x and of the
    student's forward + loss + backward on it (one micro-batch, after a warm-up)."""
    def timed(work) -> float:
        work()  # warm-up
        seconds = []
        for _ in range(repeats):
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            start = time.perf_counter()
            work()
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            seconds.append(time.perf_counter() - start)
        return sorted(seconds)[len(seconds) // 2]

    def student_step():
        with torch.autocast(x.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(x)
        distillation_loss(logits.float(), y, probs, loss.temperature, loss.alpha, loss.label_smoothing).sum().backward()

    probs = loss.teacher_probabilities(x, amp_dtype)
    model.train()
    return {"teacher_forward": timed(lambda: loss.teacher_probabilities(x, amp_dtype)),
            "student_step": timed(student_step)}
