"""The state of one training run of `python -m runner`: what the loop (training/loop.py) updates and reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from runner.training import checkpoint
from runner.training.distributed import Processes

OnCheckpoint = Callable[[Path, int], None]  # (path, epoch) after each checkpoint: a sweep's pruning hook
BestCheckpoint = Callable[[], Path | None]  # the best checkpoint the evaluator has ranked so far: retention keeps it
StopEarly = Callable[[Path], str | None]  # after a checkpoint: why to stop now (trainer.early_stopping), or None


@dataclass
class Training:
    """What one training run updates and reads, built once by `start`."""

    cfg: object
    run_dir: Path
    model: nn.Module
    step_model: nn.Module  # the model that computes: DDP- and/or compile-wrapped `model`
    loss: Callable  # (logits, targets) -> per-sample losses or their mean (runner/training/losses.py)
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    loader: torch.utils.data.DataLoader
    sampler: object
    device: torch.device
    amp_dtype: torch.dtype | None
    processes: Processes
    writer: object  # TensorBoard SummaryWriter on rank 0, None elsewhere
    provenance: dict
    best_checkpoint: BestCheckpoint | None = None
    stop_early: StopEarly | None = None
    bar: object = None  # the run's progress bar (tqdm; disabled off a terminal and on ranks > 0)
    global_step: int = 0
    first_bad_step: torch.Tensor | None = None  # on the device: the first update with a non-finite loss/gradient

    @property
    def samples_per_epoch(self) -> int:
        return self.sampler.samples_per_epoch  # all processes together

    @property
    def fp16(self) -> bool:
        return self.amp_dtype == torch.float16

    def state(self, epoch: int, rng_by_rank: list[dict] | None = None) -> dict:
        return checkpoint.training_state(self.cfg, self.model, self.optimizer, self.schedule, self.scaler, epoch,
                                         self.global_step, self.provenance, rng_by_rank)
