"""A dry run of the real loop: `python -m runner +experiment=flowers trainer.dry_run=true`.

Lightning's fast_dev_run for runner: the real job (the same model, data pipeline, micro-batch,
precision, loss and optimizer) on two learning batches of each split, in a temporary folder:
one epoch, a checkpoint written, the job run again so that it reloads and resumes from that
checkpoint for a second epoch, then the evaluator on both checkpoints. Whatever would crash an
hour into the real run crashes here in seconds, with the same message; nothing is left behind
(the run folder Hydra made is removed too). One process: under torchrun it is refused.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from runner.checks.setup import Result, Setup
from runner.common import checkpoint_files
from runner.common.errors import UserError, one_line
from runner.run import train_and_evaluate

log = logging.getLogger(__name__)


def dry_run(cfg: DictConfig) -> dict:
    """Two epochs of two learning batches, a resume between them, the evaluation; returns train_and_evaluate's."""
    from runner.training import processes

    if processes.from_environment().active:  # each process would make its own folder and resume another epoch
        raise UserError("trainer.dry_run=true runs in one process, not under torchrun. Fix: python -m runner "
                        "trainer.dry_run=true with the same settings (one process), then launch torchrun without it")
    started = time.perf_counter()
    subset = 2 * cfg.trainer.batch_size
    small = OmegaConf.merge(cfg, {
        "trainer": {"dry_run": False, "epochs": 2, "log_every_steps": 1, "early_stopping": {"patience": None},
                    # SWA from epoch 1, so that the resume carries an average (trainer.swa.start_epoch may be later)
                    "swa": {"start_epoch": 1 if cfg.trainer.swa.start_epoch else None, "every_epochs": 1}},
        "dataset": {"subset": min(subset, cfg.dataset.subset or subset)},
        "checkpoint": {"every_epochs": 1, "keep_last": None},
        "evaluate": {"after_training": True, "during_training": False},
        "checks": {"preflight": False},  # the dry run is one of them
        # a frozen stage of one epoch, so the resume crosses the unfreeze
        "finetune": {"freeze_epochs": min(cfg.finetune.freeze_epochs, 1)},
        "resume": None,
        "logger": {"mlflow": None, "wandb": None},  # no tracker run for the dry run's temporary folder
    })
    with tempfile.TemporaryDirectory(prefix="runner-dry-run-") as folder:
        log.info("dry run in %s: the real job on %d samples a split, 2 epochs with a resume between", folder, subset)
        with contextlib.redirect_stdout(io.StringIO()):  # each job's summary names the temporary folder
            # both jobs are of 2 epochs (a schedule written in the total may not stretch on resume): the first
            # job's second checkpoint is removed, so the second job reloads epoch 1's and resumes
            train_and_evaluate(OmegaConf.merge(small, {"evaluate": {"after_training": False}}), Path(folder))
            (Path(folder) / "checkpoints" / "epoch-0002.pt").unlink()
            result = train_and_evaluate(small, Path(folder))
        if not (Path(folder) / "checkpoints" / "epoch-0002.pt").is_file() or result["best"] is None:
            raise RuntimeError("the dry run ended without a second checkpoint or an evaluation")
        refuse_missing_averages(small, Path(folder) / "checkpoints" / "epoch-0002.pt")
    log.info("dry run passed in %.1f s: trained, checkpointed, resumed, evaluated. Drop trainer.dry_run to train",
             time.perf_counter() - started)
    return result


def refuse_missing_averages(cfg, path: Path) -> None:
    """The weight averages the config asks for (trainer.ema, trainer.swa) are in the resumed run's last checkpoint."""
    wanted = [name for name, on in (("ema", cfg.trainer.ema.decay), ("swa", cfg.trainer.swa.start_epoch)) if on]
    held = checkpoint_files.load(path).get("averaged") or {}
    missing = [name for name in wanted if name not in held]
    if missing:
        raise RuntimeError(f"the dry run's resumed checkpoint lacks the {' and '.join(missing)} weights it asks for")


def dry_run_check(setup: Setup) -> Result:
    """The dry run as a check (`python -m runner.check`, and part of checks.preflight): PASS when the real
    job trains, checkpoints, resumes and evaluates; FAIL with the error that would stop the real run."""
    from runner.training import processes

    started = time.perf_counter()
    expected = "trains, checkpoints, resumes and evaluates"
    if processes.from_environment().active:  # rank 0 alone cannot run a job of all the processes
        return Result("dry_run", "not run under torchrun", expected, "WARN",
                      "run it before launching: python -m runner.check checks=[dry_run] with the same settings")
    runner_log = logging.getLogger("runner")
    level = runner_log.level
    runner_log.setLevel(logging.WARNING)  # a row in the checks' table, not a second run's log and summary
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            dry_run(setup.cfg)
    except Exception as error:  # the real run's own message, in one line
        return Result("dry_run", f"stopped after {time.perf_counter() - started:.1f} s", expected, "FAIL",
                      f"the real run would stop the same way: {one_line(error)}")
    finally:
        runner_log.setLevel(level)
    return Result("dry_run", f"2 epochs of 2 learning batches in {time.perf_counter() - started:.1f} s", expected, "PASS")
