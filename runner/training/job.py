"""One training job, as `python -m runner ...` runs it: validate, record, build, resume, fit, report.

The run directory (Hydra's output dir) receives `.hydra/`, `train.log`, `run.json`, `eval/`,
`git.diff` (when the tree is dirty), `checkpoints/` and `tb/`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from runner import checkpoint_files, models, provenance
from runner.data import datasets, introspect
from runner.errors import UserError
from runner.runtime import pick_device, seed_everything
from runner.training import distributed
from runner.training.loop import changed_settings, fit
from runner.training.preemption import Preempted, requeue_slurm_job

log = logging.getLogger(__name__)

Preflight = Callable[[dict, torch.device], None]  # (the splits, the device) -> None; raises to stop

# settings that may change between a run and its resume without changing what is computed
RESUMABLE_CHANGES = ("trainer.epochs", "trainer.num_workers", "trainer.log_every_steps", "trainer.device",
                     "checkpoint.", "resume", "dataset.root", "dataset.download", "evaluate.", "sweep.", "checks.",
                     "lr_find.")


def hydra_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def train_job(cfg: DictConfig, run_dir: Path, preflight: Preflight | None = None,
              validation_metric: Callable[[Path], float] | None = None,
              evaluate: Callable[[], dict | None] | None = None) -> dict:
    """Train in run_dir; returns {"train": last epoch's figures, "best": what `evaluate` returned}.

    `cfg` has passed `runner.config.validate`. The later stages come in as functions, so that training never imports them (runner/run.py
    passes them): `preflight(splits, device)` runs before the first step, `validation_metric(path)`
    measures a checkpoint for a sweep's pruner, `evaluate()` runs after training. Under torchrun
    every process runs this; rank 0 alone logs, writes and evaluates.
    """
    processes = distributed.from_environment()
    if not processes.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # one log: rank 0's
    try:
        return train_in_processes(cfg, run_dir, processes, preflight, validation_metric, evaluate)
    finally:
        distributed.teardown(processes)


def train_in_processes(cfg: DictConfig, run_dir: Path, processes: distributed.Processes, preflight: Preflight | None,
                       validation_metric: Callable[[Path], float] | None,
                       evaluate: Callable[[], dict | None] | None) -> dict:
    main = processes.is_main
    run_dir.mkdir(parents=True, exist_ok=True)
    log.info("run directory %s", run_dir)
    log.info("command-line overrides: %s", " ".join(hydra_overrides()) or "(none)")
    log.info("resolved config:\n%s", OmegaConf.to_yaml(cfg, resolve=True).rstrip())
    git = provenance.record_git(run_dir, Path.cwd(), cfg.require_clean_git) if main else None

    trainer = cfg.trainer
    device = distributed.setup(processes, pick_device(str(trainer.device), key="trainer.device"))
    splits = datasets.build_splits(cfg.dataset)
    log.info("dataset %s: %s", cfg.dataset.name, ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    if preflight is not None and main:
        preflight(splits, device)
    seed_everything(trainer.seed, trainer.deterministic)  # after the checks, which draw random numbers
    model = models.build(cfg.model, class_counts=torch.bincount(introspect.labels_of(splits["train"]),
                                                                minlength=cfg.dataset.num_classes))
    total, trainable = models.count_parameters(model)
    log.info("model %s: %s parameters (%s trainable)", cfg.model._target_.rsplit(".", 1)[-1], f"{total:,}", f"{trainable:,}")

    resume_state, resumed_from = find_resume_state(cfg, run_dir)
    record = {
        "status": "running",
        "start_time": provenance.now(),
        "end_time": None,
        "run_dir": ".",  # paths in a run are relative to it, so the folder can move
        "overrides": hydra_overrides(),
        "seed": trainer.seed,
        "resumed_from": resumed_from,
        "git": git,
        "environment": provenance.environment(device),
    }

    trial = None
    if cfg.sweep.trial_id is not None:  # a trial of the runner_optuna sweeper
        from runner.training.trial import TrialLink

        trial = TrialLink(cfg.sweep)
        record["sweep"] = trial.record()
    if main:
        provenance.write_run_json(run_dir, record)

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / "tb")) if main else None
    if resume_state is None and main:
        writer.add_text("config", "```\n" + OmegaConf.to_yaml(cfg, resolve=True) + "\n```", 0)
    try:
        with trial or contextlib.nullcontext():
            on_checkpoint = trial and validation_metric and trial.pruning_callback(validation_metric)
            figures = fit(cfg, run_dir, splits["train"], model, device, writer,
                          {"git": git, "environment": record["environment"]}, resume_state, on_checkpoint, processes)
        if "loss" in figures and main:
            writer.add_hparams(flat_hparams(cfg), {"hparams/final_train_loss": figures["loss"]}, run_name=".")
        record["status"] = "finished"
    except Preempted as stopped:
        record["status"] = f"preempted: {stopped}"
        stopped.requeued = main and requeue_slurm_job()
        if main and not stopped.requeued:
            log.warning("%s. Resume with the same command and hydra.run.dir=%s", stopped, run_dir)
        raise
    except BaseException as error:
        pruned = type(error).__name__ == "TrialPruned"
        record["status"] = f"pruned: {error}" if pruned else f"failed: {type(error).__name__}: {error}"
        raise
    finally:
        if main:
            writer.close()
            record["end_time"] = provenance.now()
            provenance.write_run_json(run_dir, record)

    best = None
    if not main:
        distributed.barrier(processes)  # rank 0 evaluates alone: every sample exactly once
        return {"train": figures, "best": None}
    if evaluate is not None:
        best = evaluate()
    print(f"\nrun directory: {run_dir}")
    print(f"checkpoints:   {run_dir / 'checkpoints'}")
    if best is not None:
        print(f"best:          {best['checkpoint']} ({cfg.evaluate.metric} {best[cfg.evaluate.metric]:.4f} on val)")
    print(f"TensorBoard:   tensorboard --logdir {run_dir / 'tb'}")
    distributed.barrier(processes)
    return {"train": figures, "best": best}






def find_resume_state(cfg: DictConfig, run_dir: Path) -> tuple[dict | None, str | None]:
    """The checkpoint to continue from: resume=PATH, else the newest in this run directory."""
    if cfg.resume is not None:
        path = Path(cfg.resume)
        state = checkpoint_files.load(path)
    else:
        found = checkpoint_files.load_newest(run_dir / "checkpoints")
        if found is None:
            return None, None
        path, state = found
    saved = state["config"]
    current = OmegaConf.to_container(cfg, resolve=True)
    changes = [c for c in changed_settings(saved, current) if not c.startswith(RESUMABLE_CHANGES)]
    if changes:
        raise UserError(
            f"{path} was written with a different config ({'; '.join(changes[:5])}). Fix: rerun with the "
            "run's own settings, or start a new run directory (drop hydra.run.dir=...)"
        )
    log.info("resuming from %s (epoch %d, step %d)", path, state["epoch"], state["global_step"])
    try:
        resumed_from = str(path.resolve().relative_to(run_dir.resolve()))
    except ValueError:
        resumed_from = str(path)
    return state, resumed_from


def flat_hparams(cfg: DictConfig) -> dict:
    """Scalar settings as {"optimizer.lr": 0.005, ...} for TensorBoard's hparams view."""
    flat = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif isinstance(value, (int, float, str, bool)):
                flat[f"{prefix}{key}"] = value
            elif value is None:
                flat[f"{prefix}{key}"] = "null"
            else:
                flat[f"{prefix}{key}"] = str(value)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat
