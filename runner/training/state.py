"""One training run of `python -m runner` as the loop (training/loop.py) reads and updates it, and `start`,
which builds it: the model on its device, the optimizer, the loader, the schedule, the scaler and the averaged
weights (trainer.ema, trainer.swa: training/averaging.py)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from runner.common.runtime import autocast_dtype
from runner.data.loaders import train_loader
from runner.data.mixing import mixing_of
from runner.training import averaging, checkpoint
from runner.training.distributed import Processes
from runner.training.hooks import Hooks
from runner.training.losses import build_loss
from runner.training.optim import build_optimizer, build_schedule
from runner.training.settings import CheckpointSettings, FinetuneSettings, TrainerSettings, typed


@dataclass
class Training:
    """What one training run reads and updates, built once by `start`."""

    # what the loop reads
    cfg: DictConfig  # the whole config, saved in every checkpoint
    settings: TrainerSettings  # cfg.trainer, typed
    checkpoints: CheckpointSettings  # cfg.checkpoint, typed
    finetune: FinetuneSettings  # cfg.finetune, typed: the stages (training/finetune.py)
    run_dir: Path
    processes: Processes
    hooks: Hooks  # what runs before training, after each checkpoint and after the run (runner/run.py's)
    # what computes an update
    model: nn.Module
    step_model: nn.Module  # the model that computes: DDP- and/or compile-wrapped `model`
    loss: Callable  # (logits, targets) -> per-sample losses or their mean (runner/training/losses.py)
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler  # enabled under fp16 only
    device: torch.device
    amp_dtype: torch.dtype | None  # autocast's dtype; None: fp32
    # what feeds it
    loader: torch.utils.data.DataLoader
    sampler: object  # the epoch's order of samples (runner/data/loaders.py: EpochSampler)
    # where it reports (rank 0; None elsewhere) and what each checkpoint records
    writer: object  # TensorBoard SummaryWriter
    provenance: dict
    # the counters
    global_step: int = 0
    first_bad_step: torch.Tensor | None = None  # on the device: the first update with a non-finite loss/gradient
    averages: averaging.Averages = field(default_factory=averaging.Averages)  # EMA and SWA copies (None: off)
    mixing: object = None  # dataset.mixup/cutmix as a data.mixing.Mixing, read once at start (None: off)

    @property
    def samples_per_epoch(self) -> int:
        return self.sampler.samples_per_epoch  # all processes together

    @property
    def fp16(self) -> bool:
        return self.amp_dtype == torch.float16

    def state(self, epoch: int, rng_by_rank: list[dict] | None = None) -> dict:
        return checkpoint.training_state(self.cfg, self.model, self.optimizer, self.schedule, self.scaler, epoch,
                                         self.global_step, self.provenance, rng_by_rank, self.averages)


def start(cfg: DictConfig, run_dir: Path, train_set, model: nn.Module, device: torch.device, writer,
          provenance: dict, processes: Processes, hooks: Hooks) -> Training:
    """The model on its device, the optimizer, the loader, the schedule (in updates), the scaler and the averages
    (copies of the weights now, on the device; a resume then loads the checkpoint's into them)."""
    settings = typed(cfg.trainer, TrainerSettings)
    amp_dtype = autocast_dtype(settings.precision, device, key="trainer.precision")
    model.to(device)
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)
    finetune = typed(cfg.get("finetune") or {}, FinetuneSettings)
    # over every parameter, in groups of their own lr: a frozen stage's parameters are in it, without gradients
    optimizer = build_optimizer(cfg.optimizer, model, lr_mult=finetune.lr_mult)
    loader, sampler = train_loader(train_set, settings.micro_batch_size, settings.seed, settings.num_workers,
                                   pin_memory=device.type == "cuda", batch_size=settings.batch_size,
                                   rank=processes.rank, world_size=processes.world_size, device=device)
    updates_per_epoch = math.ceil(sampler.samples_per_epoch / settings.batch_size)
    schedule = build_schedule(cfg.schedule, optimizer, updates_per_epoch, settings.epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return Training(cfg, settings, typed(cfg.checkpoint, CheckpointSettings), finetune, run_dir, processes, hooks,
                    model, model, build_loss(cfg.loss), optimizer, schedule, scaler, device, amp_dtype,
                    loader, sampler, writer, provenance,
                    first_bad_step=torch.full((), -1, dtype=torch.int64, device=device),
                    averages=averaging.build(settings, model), mixing=mixing_of(cfg.dataset))


def wrap_for_speed_and_processes(model: nn.Module, settings: TrainerSettings, processes: Processes,
                                 device: torch.device) -> nn.Module:
    """DDP across processes (gradients averaged at the last micro-batch), then torch.compile if asked. Called again
    where finetune's stage changes the parameters that train: DDP registers those it is built with (and
    torch.compile then compiles once more)."""
    if processes.active:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(model) if settings.compile else model
