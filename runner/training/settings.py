"""The training settings' schema and rules: `python -m runner trainer.epochs=30 checkpoint.keep_last=3 ...`.

Hydra types every value against these dataclasses when it composes (so `trainer.compile=maybe`
or `trainer.epochs=ten` is refused there); `validate` adds what types cannot say.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Any  # noqa: UP035 (OmegaConf reads these annotations at run time)

from omegaconf import DictConfig, OmegaConf

from runner.common.errors import UserError
from runner.common.rules import device_name, fail, int_at_least, one_of, positive_number, resumable
from runner.training import processes, progressive
from runner.training.checkpoint_settings import CheckpointSettings, validate_checkpoints  # noqa: F401 (schema.py)

PRECISIONS = ("auto", "32", "bf16", "16")


@dataclass
class EarlyStopping:
    patience: int | None = None
    """N: stop when evaluate.metric has not improved for N checkpoints in a row; null: never."""
    min_delta: float = 0.0
    """An improvement smaller than this does not count."""


@dataclass
class EmaSettings:
    """An exponential moving average of the weights, updated after every optimizer update (training/averaging.py)."""

    decay: float | None = None
    """In (0, 1), e.g. 0.999 (about the last 1000 updates); null: no EMA."""
    warmup: bool = True
    """The decay grows as min(decay, (1 + t) / (10 + t)) over the first t updates, so the init fades out fast."""


@dataclass
class SwaSettings:
    """Stochastic weight averaging: the mean of the weights at epoch ends (training/averaging.py); the evaluator
    recomputes its BatchNorm statistics."""

    start_epoch: int | None = None
    """K: the average takes the weights at the end of epoch K (1-based) and after; null: no SWA."""
    every_epochs: int = 1
    """Every N epochs from start_epoch on."""


@dataclass
class TrainerSettings:
    epochs: int = resumable(20)
    """Passes over the training split."""
    batch_size: int = 64
    """The learning batch: samples per optimizer update (all processes together)."""
    micro_batch_size: int = 64
    """The computational batch: samples per forward/backward; accumulation = batch_size / micro_batch_size."""
    precision: str = "auto"
    """auto | 32 | bf16 | 16 (auto: bf16 on GPUs that support it, else fp16 on CUDA; fp32 on the CPU)."""
    grad_clip_norm: float | None = None
    """Clip the global gradient norm to this value; null: no clipping."""
    channels_last: bool = False
    """Images and convolution weights in channels-last memory order (faster on recent GPUs)."""
    compile: bool = False
    """torch.compile the model."""
    num_workers: int = resumable(0)
    """DataLoader worker processes (0: load in the main process)."""
    device: str = resumable("auto")
    """auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps."""
    num_threads: int | None = resumable(None)
    """torch's CPU threads; null: the cores this process may use (SLURM's CPUs per task, shared by torchrun's processes)."""
    seed: int = 0
    """Seeds the model's initialization, the data order and the augmentation."""
    deterministic: bool = False
    """Bit-identical reruns (and resumes) on the CPU; deterministic algorithms on the GPU."""
    dry_run: bool = False
    """A few updates of the real job in a temporary folder, a checkpoint, a resume and the
    evaluation, in seconds (runner/dry_run.py); then stop."""
    log_every_steps: int = resumable(50)
    """Optimizer updates between log lines and TensorBoard points."""
    log_histograms_every: int | None = resumable(None)
    """N: every N updates, each layer's weights, last update and update/weight ratio in TensorBoard; null: off."""
    stop_signals: list[str] = field(default_factory=lambda: ["SIGUSR1", "SIGTERM"])
    """On these signals: finish the step, write a checkpoint, stop (and requeue under SLURM). python -m runner
    always catches SIGUSR1, SIGTERM and SIGINT (Ctrl-C) from its first line; these add to them."""
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    """Stop when the evaluator's metric stops improving (the evaluator measures each checkpoint)."""
    # untyped: OmegaConf 2.3 cannot override a null structured field with a dict; `validate` checks the keys
    progressive_resize: Any = None
    """null: train at dataset.image_size; {start: 0.5, end_epoch: 0.75}: the training crop grows from start x
    dataset.image_size to it over the first end_epoch of the epochs, in 16-pixel steps (runner/training/progressive.py)."""
    ema: EmaSettings = field(default_factory=EmaSettings)
    """An EMA of the weights beside the raw ones in each checkpoint (the evaluator's `weights` ema rows)."""
    swa: SwaSettings = field(default_factory=SwaSettings)
    """A SWA of the weights beside the raw ones in each checkpoint (the evaluator's `weights` swa rows)."""


@dataclass
class FinetuneSettings:
    """Staged fine-tuning of a pretrained model (runner/training/finetune.py)."""

    freeze_epochs: int = 0
    """N: the first N epochs train the head alone, the body frozen (its BatchNorm statistics kept); 0: no frozen stage."""
    train_norm: bool = False
    """In the frozen stage the norm layers' scale and shift train too (their statistics are still kept)."""
    lr_mult: float = 1.0
    """fastai's discriminative learning rates: the body at optimizer.lr / lr_mult, the head at optimizer.lr; 1: one lr."""


@dataclass
class SweepLink:
    """Filled in by the runner_optuna sweeper for each trial; null outside a sweep."""

    study: str | None = None
    """The study's name."""
    storage: str | None = None
    """The study's storage URL (a journal file path or postgresql://...)."""
    trial: int | None = None
    """The trial's number in the study."""
    trial_id: int | None = None
    """The trial's id in the storage."""
    pruner: str = "none"
    """The study's pruner (runner/common/study_storage.py: PRUNERS): with one, checkpoints are reported to the study."""
    heartbeat_seconds: float = 10
    """How often the trial's job tells the study it is alive."""


def typed(block: DictConfig, schema: type):
    """A config block as its schema's dataclass (`OmegaConf.to_object`), for code that reads settings as typed
    attributes, not keys (the training loop). Merged onto the schema first, so a block that lost its schema
    (an `OmegaConf.create` of plain values) reads the same."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), block))


def validate(cfg: DictConfig) -> None:
    """trainer.*, checkpoint.*, loss.*, optimizer.*, schedule.*, resume, sweep.* (one UserError at the first problem)."""
    trainer = cfg.trainer
    int_at_least("trainer.epochs", trainer.epochs, 1, "trainer.epochs=10")
    int_at_least("trainer.batch_size", trainer.batch_size, 1, "trainer.batch_size=64")
    int_at_least("trainer.micro_batch_size", trainer.micro_batch_size, 1, "trainer.micro_batch_size=64")
    batch_divides(trainer.batch_size, trainer.micro_batch_size, processes.from_environment().world_size)
    if str(trainer.precision) not in PRECISIONS:
        fail("trainer.precision", trainer.precision, "is not known", "trainer.precision=auto, 32, bf16 or 16")
    if trainer.grad_clip_norm is not None:
        positive_number("trainer.grad_clip_norm", trainer.grad_clip_norm,
                        "trainer.grad_clip_norm=1.0, or null for no clipping")
    int_at_least("trainer.num_workers", trainer.num_workers, 0,
                 "trainer.num_workers=0 (load in the main process) or more")
    int_at_least("trainer.seed", trainer.seed, 0, "trainer.seed=0")
    int_at_least("trainer.log_every_steps", trainer.log_every_steps, 1, "trainer.log_every_steps=10")
    if trainer.log_histograms_every is not None:
        int_at_least("trainer.log_histograms_every", trainer.log_histograms_every, 1,
                     "trainer.log_histograms_every=100, or null for none")
    device_name("trainer.device", trainer.device)
    if trainer.num_threads is not None:
        int_at_least("trainer.num_threads", trainer.num_threads, 1, "trainer.num_threads=4, or null for the cores available")
    if trainer.early_stopping.patience is not None:
        int_at_least("trainer.early_stopping.patience", trainer.early_stopping.patience, 1,
                     "trainer.early_stopping.patience=5, or null")
    positive_number("trainer.early_stopping.min_delta", trainer.early_stopping.min_delta,
                    "trainer.early_stopping.min_delta=0.001", allow_zero=True)
    unknown = [name for name in trainer.stop_signals if name not in signal.Signals.__members__]
    if unknown:
        fail("trainer.stop_signals", list(trainer.stop_signals), f"names unknown signals {unknown}",
             "trainer.stop_signals=[SIGUSR1,SIGTERM]")
    if trainer.progressive_resize is not None:
        validate_progressive_resize(cfg)
    validate_averaging(trainer)
    validate_checkpoints(cfg.checkpoint, cfg.resume)
    smoothing = cfg.loss.get("label_smoothing", 0.0)  # cross_entropy's; a loss of the user's may have none
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0 <= smoothing < 1:
        fail("loss.label_smoothing", smoothing, "must be in [0, 1)", "loss.label_smoothing=0.1")
    validate_optimizer_and_schedule(cfg)
    validate_finetune(cfg)
    if cfg.sweep.storage is not None:  # a password would be copied into the config, run.json, checkpoints, tb
        from runner.common.study_storage import refuse_passwords

        refuse_passwords([f"sweep.storage={cfg.sweep.storage}"])
    if cfg.sweep.pruner != "none":  # a sweep trial (optuna is imported only then)
        from runner.common.study_storage import PRUNERS

        one_of("sweep.pruner", cfg.sweep.pruner, PRUNERS)
    if processes.from_environment().active and cfg.sweep.pruner != "none":
        raise UserError("pruning a sweep trial that trains in several processes is not supported (the pruner "
                        "would stop rank 0 alone). Fix: hydra.sweeper.pruner=none, or one process per trial")


def validate_progressive_resize(cfg: DictConfig) -> None:
    """Its two keys, both fractions in (0, 1], a first size of 16 pixels or more, a model that takes any size."""
    ramp = cfg.trainer.progressive_resize
    example = "trainer.progressive_resize={start:0.5,end_epoch:0.75}"
    if not isinstance(ramp, DictConfig):
        fail("trainer.progressive_resize", ramp, "is not a ramp", f"{example}, or null")
    unknown = sorted(set(ramp) - set(progressive.DEFAULTS))
    if unknown:
        raise UserError(f"trainer.progressive_resize.{unknown[0]} is not a setting (the ramp has start and "
                        f"end_epoch). Fix: {example}")
    ramp = {**progressive.DEFAULTS, **ramp}
    for key, fix in (("start", "0.5"), ("end_epoch", "0.75")):
        value = ramp[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            fail(f"trainer.progressive_resize.{key}", value, "must be in (0, 1]", f"trainer.progressive_resize.{key}={fix}")
    size = cfg.dataset.get("image_size")
    sizes = [size, size] if isinstance(size, int) else list(size or [])
    if len(sizes) == 2 and all(isinstance(s, int) and s > 0 for s in sizes):  # else the dataset's rules say why
        why = progressive.refusal((sizes[0], sizes[1]), ramp["start"])
        if why:
            raise UserError(f"trainer.progressive_resize.start={ramp['start']} with dataset.image_size={size} {why}")
    if "image_size" in cfg.model:  # mlp, linear, lenet: their first layer is built for dataset.image_size
        written = ",".join(f"{key}:{value}" for key, value in ramp.items())
        raise UserError(f"trainer.progressive_resize={{{written}}} needs a model that takes any "
                        f"image size; {cfg.model.get('_target_')} is built for one (it takes model.image_size). "
                        "Fix: model=convnet (or resnet18), or trainer.progressive_resize=null")


def validate_averaging(trainer: DictConfig) -> None:
    """trainer.ema and trainer.swa (training/averaging.py)."""
    decay = trainer.ema.decay
    if decay is not None and not 0 < decay < 1:
        fail("trainer.ema.decay", decay, "must be in (0, 1) (the weight of the average so far at each update)",
             "trainer.ema.decay=0.999, or null for no EMA")
    start, epochs = trainer.swa.start_epoch, trainer.epochs
    if start is not None:
        int_at_least("trainer.swa.start_epoch", start, 1, "trainer.swa.start_epoch=1 (the first epoch) or later, "
                     "or null for no SWA")
        if start > epochs:
            fail("trainer.swa.start_epoch", start, f"is after the last epoch (trainer.epochs={epochs})",
                 f"trainer.swa.start_epoch={epochs} or earlier, or trainer.epochs={start} or more")
    int_at_least("trainer.swa.every_epochs", trainer.swa.every_epochs, 1, "trainer.swa.every_epochs=1")


def validate_optimizer_and_schedule(cfg: DictConfig) -> None:
    positive_number("optimizer.lr", cfg.optimizer.get("lr"), "optimizer.lr=3e-4 (a positive learning rate)")
    if "weight_decay" in cfg.optimizer:
        positive_number("optimizer.weight_decay", cfg.optimizer.weight_decay, "optimizer.weight_decay=0.01 (or 0)",
                        allow_zero=True)
    if "warmup_epochs" in cfg.schedule:
        positive_number("schedule.warmup_epochs", cfg.schedule.warmup_epochs, "schedule.warmup_epochs=5",
                        allow_zero=True)
    if "step_epochs" in cfg.schedule:
        positive_number("schedule.step_epochs", cfg.schedule.step_epochs, "schedule.step_epochs=30")


def validate_finetune(cfg: DictConfig) -> None:
    """finetune.* and the optimizer's own group settings (layer_decay, no_decay_norm_and_bias)."""
    finetune, epochs = cfg.finetune, cfg.trainer.epochs
    int_at_least("finetune.freeze_epochs", finetune.freeze_epochs, 0, "finetune.freeze_epochs=0 (no frozen stage) or more")
    if finetune.freeze_epochs >= epochs:
        fail("finetune.freeze_epochs", finetune.freeze_epochs, f"leaves no epoch of trainer.epochs={epochs} to train "
             "the whole model in", f"finetune.freeze_epochs={epochs - 1}{' or fewer' * (epochs > 1)}, or trainer.epochs="
             f"{finetune.freeze_epochs + 1} or more")
    if finetune.freeze_epochs > 0 and cfg.model.get("freeze", "none") != "none":
        fail("finetune.freeze_epochs", finetune.freeze_epochs, f"unfreezes what model.freeze={cfg.model.freeze} "
             "keeps frozen for the whole run", "model.freeze=none for staged fine-tuning, or finetune.freeze_epochs=0")
    lr_mult = finetune.lr_mult
    if isinstance(lr_mult, bool) or not isinstance(lr_mult, (int, float)) or lr_mult < 1:
        fail("finetune.lr_mult", lr_mult, "must be a number >= 1 (the body trains at optimizer.lr / lr_mult)",
             "finetune.lr_mult=10, or 1 for one learning rate")
    layer_decay = cfg.optimizer.get("layer_decay")
    if layer_decay is not None and (isinstance(layer_decay, bool) or not isinstance(layer_decay, (int, float))
                                    or not 0 < layer_decay <= 1):
        fail("optimizer.layer_decay", layer_decay, "must be in (0, 1] (each layer down from the head gets that "
             "factor of the learning rate)", "optimizer.layer_decay=0.75, or null for none")
    if layer_decay is not None and lr_mult != 1:  # two rules for the body's learning rate: neither would be the one asked
        raise UserError(f"finetune.lr_mult={lr_mult} and optimizer.layer_decay={layer_decay} are two rules for the "
                        "body's learning rates (fastai's split and timm's layer-wise decay): pick one. "
                        "Fix: finetune.lr_mult=1 or optimizer.layer_decay=null")
    no_decay = cfg.optimizer.get("no_decay_norm_and_bias", True)
    if not isinstance(no_decay, bool):
        fail("optimizer.no_decay_norm_and_bias", no_decay, "must be true or false",
             "optimizer.no_decay_norm_and_bias=true (no weight decay on norm and bias parameters) or false")


def batch_divides(batch_size: int, micro_batch_size: int, processes: int) -> None:
    """Each process's share of a learning batch is a whole number of micro-batches."""
    if batch_size % (micro_batch_size * processes) == 0:
        return
    if processes == 1:
        divisors = [d for d in range(1, batch_size + 1) if batch_size % d == 0]
        raise UserError(
            f"trainer.batch_size={batch_size} is not a multiple of trainer.micro_batch_size={micro_batch_size}. "
            f"Fix: set trainer.micro_batch_size to a divisor of {batch_size} "
            f"(e.g. {', '.join(map(str, divisors[-4:-1] or divisors))})"
        )
    raise UserError(f"trainer.batch_size={batch_size} is not a multiple of trainer.micro_batch_size="
                    f"{micro_batch_size} x {processes} processes. Fix: a smaller trainer.micro_batch_size, "
                    "or a batch_size that is a multiple of it times the processes")
