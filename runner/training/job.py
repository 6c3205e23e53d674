"""One training job, as `python -m runner ...` runs it: record, build, resume, fit, report.

The run directory (Hydra's output dir) receives `.hydra/`, `train.log`, `run.json`, `eval/`,
`git.diff` (when the tree is dirty), `checkpoints/`, `tb/` and, with dataset.bad_images=skip,
`skipped_images.txt`.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from runner import models
from runner.common import checkpoint_files, provenance, run_lock, stop_signals
from runner.common.errors import UserError
from runner.common.io import remove_stale_temporaries, write_text_atomic
from runner.common.run_folders import tensorboard_folder
from runner.common.runtime import pick_device, seed_everything, use_threads
from runner.common.stop_signals import Preempted, requeue_slurm_job
from runner.data import datasets, introspect, standardization
from runner.data.image_files import Screening
from runner.data.loaders import EpochSampler
from runner.training import distributed, hparams, teachers
from runner.training.checkpoint import find_resume_state, refuse_weights_that_do_not_fit
from runner.training.describe import hydra_overrides
from runner.training.hooks import NO_HOOKS, Hooks
from runner.training.loop import fit

log = logging.getLogger(__name__)


def train_job(cfg: DictConfig, run_dir: Path, hooks: Hooks = NO_HOOKS) -> dict:
    """Train in run_dir; returns {"train": last epoch's figures, "best": what hooks.evaluate returned}.

    `cfg` has passed `runner.config.schema.validate`. The other stages come in as `hooks` (training/hooks.py:
    before training, after each checkpoint, after the run), so that training never imports them
    (runner/run.py fills them). Under torchrun every process runs this; rank 0 alone logs, writes and
    calls the hooks.
    """
    processes = distributed.from_environment()
    if not processes.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # one log: rank 0's
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        # held before anything is written: a second trainer on this folder is refused here
        with run_lock.holding(run_dir) if processes.is_main else contextlib.nullcontext():
            return train_in_locked_folder(cfg, run_dir, hooks, processes)
    finally:
        distributed.teardown(processes)


def train_in_locked_folder(cfg: DictConfig, run_dir: Path, hooks: Hooks, processes: distributed.Processes) -> dict:
    """Record, build, resume, fit, evaluate, report: the job, with the run folder to itself."""
    main = processes.is_main
    remove_stale_temporaries(run_dir)  # run.json or git.diff of an attempt killed mid-write
    git = provenance.record_git(run_dir, Path.cwd(), cfg.require_clean_git) if main else None
    device = distributed.setup(processes, pick_device(str(cfg.trainer.device), key="trainer.device"))
    log.info("%d CPU threads (trainer.num_threads)", use_threads(cfg.trainer.num_threads))
    splits, screening = datasets.build_screened_splits(cfg.dataset)
    log.info("dataset %s: %s", cfg.dataset.name, ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    if main:
        write_skipped_images(run_dir, screening)
        hooks.run_preflight(splits, device)
    seed_everything(cfg.trainer.seed, cfg.trainer.deterministic)  # after the checks, which draw random numbers
    resume_state, resumed_from = find_resume_state(cfg, run_dir)
    if resume_state is not None:  # loss=distill: the teachers the run started with, each file unchanged
        teachers.refuse_changed_teachers(cfg, resume_state.get("provenance", {}).get("teachers"))
    model = build_model(cfg, splits["train"], weights_from_checkpoint=resume_state is not None)
    refuse_single_sample_micro_batches(cfg.trainer, model, len(splits["train"]), processes)
    if resume_state is not None:
        refuse_weights_that_do_not_fit(resume_state, model, resumed_from)
    record = {**run_record(cfg, git, device, resumed_from), "images": screening.summary(),
              "parameters": models.count_parameters(model)[0],
              # which pretrained weights it started from ({name, source, file, sha256}); None: from scratch
              "weights": (resume_state or {}).get("provenance", {}).get("weights", model.pretrained_weights),
              # the mean/std the data got and what the weights expect (runner/data/standardization.py)
              "standardization": standardization.record(cfg),
              # loss=distill's teachers ({teacher, checkpoint, weights, sha256}, never their weights); None otherwise
              "teachers": teachers.teachers_record(cfg),
              # what the command line chose (TensorBoard's HParams columns for the folder: training/hparams.py)
              "hparams": chosen_settings(cfg, hydra_overrides())}
    figures = train_and_record(cfg, run_dir, splits["train"], model, device, resume_state, record, hooks, processes)
    best = evaluate_after_training(hooks, run_dir, record, processes)
    if main:
        write_hparams(cfg, run_dir, record, figures, best)
        print_summary(run_dir, best, cfg.evaluate.metric)
    return {"train": figures, "best": best}


def write_skipped_images(run_dir: Path, screening: Screening) -> None:
    """skipped_images.txt: each file left out (bad_images=skip) and why, one per line."""
    if screening.skipped:
        log.warning("%d image files do not decode and are left out: listed in %s", len(screening.skipped),
                    run_dir / "skipped_images.txt")
        write_text_atomic(run_dir / "skipped_images.txt", "".join(f"{path}\t{why}\n" for path, why in screening.skipped))


def build_model(cfg: DictConfig, train_set, weights_from_checkpoint: bool) -> torch.nn.Module:
    """The configured model; resumed, it fetches no pretrained weights: the checkpoint holds every weight (a
    requeued job on a node without internet or without the weights file goes on)."""
    class_counts = torch.bincount(introspect.labels_of(train_set), minlength=cfg.dataset.num_classes)
    model_cfg = models.without_pretrained_weights(cfg.model) if weights_from_checkpoint else cfg.model
    model = models.build(model_cfg, class_counts=class_counts)
    total, trainable = models.count_parameters(model)
    log.info("model %s: %s parameters (%s trainable)", cfg.model._target_.rsplit(".", 1)[-1], f"{total:,}",
             f"{trainable:,}")
    return model


def refuse_single_sample_micro_batches(trainer, model: torch.nn.Module, train_size: int,
                                       processes: distributed.Processes) -> None:
    """BatchNorm cannot normalize a micro-batch of one sample: refuse before anything is written, not at the crash."""
    if not models.has_batch_norm(model):
        return
    if trainer.micro_batch_size == 1:
        raise UserError("the model has BatchNorm and trainer.micro_batch_size=1: BatchNorm cannot normalize one "
                        "sample. Fix: trainer.micro_batch_size=2 or more, or a model with GroupNorm (model=convnet)")
    world = processes.world_size
    n = EpochSampler(train_size, 0, trainer.batch_size, processes.rank, world).samples_per_epoch
    last_window = n % trainer.batch_size or trainer.batch_size
    share = len(range(processes.rank, last_window, world))
    if share % trainer.micro_batch_size == 1:
        raise UserError(
            f"the model has BatchNorm and the last micro-batch of each epoch has 1 sample ({n} training samples in "
            f"learning batches of {trainer.batch_size}, micro-batches of {trainer.micro_batch_size} in {world} "
            "processes): BatchNorm cannot normalize one sample. Fix: another trainer.micro_batch_size or "
            "trainer.batch_size, or dataset.subset so that no micro-batch holds a single sample")


def run_record(cfg: DictConfig, git: dict | None, device: torch.device, resumed_from: str | None) -> dict:
    """What run.json says of this attempt (its status and end time are filled in as it goes)."""
    return {
        "status": "running",
        "start_time": provenance.now(),
        "end_time": None,
        "run_dir": ".",  # paths in a run are relative to it, so the folder can move
        "overrides": hydra_overrides(),
        "seed": cfg.trainer.seed,
        "resumed_from": resumed_from,
        "git": git,
        "environment": provenance.environment(device),
    }


def train_and_record(cfg: DictConfig, run_dir: Path, train_set, model, device, resume_state: dict | None,
                     record: dict, hooks: Hooks, processes: distributed.Processes) -> dict:
    """fit() inside the run's record: run.json says running, then finished, preempted, pruned or failed."""
    main = processes.is_main
    trial = None
    if cfg.sweep.trial_id is not None:  # a trial of the runner_optuna sweeper
        from runner.sweep.trial_link import TrialLink

        trial = TrialLink(cfg.sweep)
        record["sweep"] = trial.record()
        if hooks.validation_metric is not None:
            hooks = hooks.with_pruning(trial.pruning_callback(hooks.validation_metric, cfg.trainer.epochs))
    if main:
        provenance.write_run_json(run_dir, record)
    writer = open_tensorboard(cfg, run_dir, fresh=resume_state is None) if main else None
    try:
        with trial or contextlib.nullcontext():
            figures = fit(cfg, run_dir, train_set, model, device, writer,
                          {"git": record["git"], "environment": record["environment"], "weights": record["weights"],
                           "teachers": record["teachers"]},
                          resume_state, processes,
                          hooks)
        refuse_to_go_on_after_a_stop_signal(figures, run_dir, processes)
        record["epochs_done"] = figures.get("epoch")
        record["status"] = "finished"
        return figures
    except Preempted as stopped:
        stop_for_the_signal(stopped, run_dir, record, processes)
        raise
    except KeyboardInterrupt:
        record["status"] = "interrupted: stopped at once by a second Ctrl-C (the checkpoints before are kept)"
        raise
    except BaseException as error:
        pruned = type(error).__name__ == "TrialPruned"
        record["status"] = f"pruned: {error}" if pruned else f"failed: {type(error).__name__}: {error}"
        if pruned and main:  # its row in TensorBoard's HParams table, with its last validation figures
            write_hparams(cfg, run_dir, record, {}, None, status="pruned")
        raise
    finally:
        if main:
            writer.close()
            record["end_time"] = provenance.now()
            provenance.write_run_json(run_dir, record)


def evaluate_after_training(hooks: Hooks, run_dir: Path, record: dict, processes: distributed.Processes) -> dict | None:
    """Rank 0 evaluates while the others wait (every sample exactly once). A stop signal between two of its
    checkpoints (Preempted, the rows so far kept) stops every process: run.json says so, the job requeues,
    and the requeued (finished) run evaluates the rest."""
    best, stopped = None, None
    if processes.is_main:
        try:
            best = hooks.run_evaluation()
        except Preempted as error:
            stopped = error
    if not distributed.any_process(stopped is not None, processes):  # also the others' wait for rank 0
        return best
    if stopped is None:  # not rank 0
        stopped = Preempted(stop_signals.received() or "a stop signal", "none", -1, "during rank 0's evaluation")
    stop_for_the_signal(stopped, run_dir, record, processes, what_is_left="The rest of the evaluation: ")
    raise stopped


def stop_for_the_signal(stopped: Preempted, run_dir: Path, record: dict, processes: distributed.Processes,
                        what_is_left: str = "") -> None:
    """After a stop signal, in every process alike: run.json says interrupted (Ctrl-C) or preempted, rank 0
    requeues the SLURM job unless the user stopped it, and every process learns whether it did and exits as
    rank 0 does (torchrun's agent stops the others when one process exits first); unrequeued, the log says
    how to resume."""
    main = processes.is_main
    record["status"] = f"{'interrupted' if stopped.by_user else 'preempted'}: {stopped}"
    record["end_time"] = provenance.now()
    if main:  # written before the requeue, which may end this job
        provenance.write_run_json(run_dir, record)
    stopped.requeued = distributed.any_process(main and not stopped.by_user and requeue_slurm_job(), processes)
    if main and not stopped.requeued:
        log.warning("%s. %sResume with the same command and hydra.run.dir=%s", stopped, what_is_left, run_dir)


def refuse_to_go_on_after_a_stop_signal(figures: dict, run_dir: Path, processes: distributed.Processes) -> None:
    """A stop signal that came after the last update (or before a finished run's rerun): the training is
    saved, so stop here, before the evaluation, which the requeued job (or the same command) does. Every
    process decides alike (the signal may reach them at different moments)."""
    name = stop_signals.received()
    if distributed.any_process(name is not None, processes):
        newest = checkpoint_files.list_checkpoints(run_dir / "checkpoints")[-1]
        raise Preempted(name or "a stop signal in another process", str(newest.relative_to(run_dir)), -1,
                        f"after epoch {figures.get('epoch')}, before the evaluation")


def open_tensorboard(cfg: DictConfig, run_dir: Path, fresh: bool):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(tensorboard_folder(run_dir))
    if fresh:
        writer.add_text("config", "```\n" + OmegaConf.to_yaml(cfg, resolve=True) + "\n```", 0)
    return writer


def print_summary(run_dir: Path, best: dict | None, metric: str) -> None:
    print(f"\nrun directory: {run_dir}")
    print(f"checkpoints:   {run_dir / 'checkpoints'}")
    if best is not None:
        weights = best.get("weights") or "raw"  # averaged weights say so: "(ema; top1 0.9721 on val)"
        said = "" if weights == "raw" else f"{weights}; "
        print(f"best:          {best['checkpoint']} ({said}{metric} {best[metric]:.4f} on val)")
    print(f"TensorBoard:   tensorboard --logdir {run_dir / 'tb'}")
    print(f"               tensorboard --logdir {run_dir.parent}   (every run beside it: HParams compares them)")


VALIDATION_METRICS = ("top1", "loss", "top5", "balanced_accuracy", "ece", "cross_entropy")  # evaluation/metric_names


def write_hparams(cfg: DictConfig, run_dir: Path, record: dict, figures: dict, best: dict | None,
                  status: str = "finished") -> None:
    """TensorBoard's HParams table (runner/training/hparams.py): this run's session (what its command line
    chose, against the final training loss and the best validation metrics; a pruned trial's last ones), then
    the experiment summary of its folder, with the settings of every run there."""
    if status == "finished" and "loss" not in figures:
        return  # nothing was trained in this call (a finished run rerun)
    values = {hparams.TRAIN_LOSS: figures["loss"]} if "loss" in figures else {}
    if status == "pruned":
        best = hparams.last_validation_figures(run_dir, VALIDATION_METRICS)
    values |= {f"hparams/val_{key}": best[key] for key in VALIDATION_METRICS if best and best.get(key) is not None}
    hparams.write_session(tensorboard_folder(run_dir), record["hparams"], values,
                          hparams.session_name(run_dir, record, status), status, step=0)
    try:
        hparams.write_folder_summaries(run_dir, hparams.metric_tags(cfg.evaluate.metric, VALIDATION_METRICS), cfg.name)
    except OSError as error:  # a parent folder not ours to write: the run itself is done and recorded
        log.warning("TensorBoard's HParams summary of %s not written: %s", run_dir.parent, error)


def chosen_settings(cfg: DictConfig, overrides: list[str]) -> dict:
    """{"optimizer.lr": 0.01, "model": "convnet", "trainer.seed": 0}: the overrides' resolved values."""
    chosen = {}
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key.startswith(("hydra.", "hydra/", "sweep.")) or key == "name" or not _:
            continue  # plumbing, and the runs' folder name (every run beside it shares it)
        found = OmegaConf.select(cfg, key, default=value)
        chosen[key] = value if isinstance(found, DictConfig) else found  # a group's option: its name
    chosen["trainer.seed"] = cfg.trainer.seed
    return {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in chosen.items()}
