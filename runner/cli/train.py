"""python -m runner [+experiment=NAME] [group=option] [key=value ...]   (the training command).

Installed, the same is the `runner` command; `eval "$(runner -sc install=bash)"` completes its
groups, options and keys in bash. `python -m runner` enters through runner/__main__.py, which
catches the stop signals before importing this module.
"""

import logging
import sys
from functools import partial
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from runner.common.errors import UserError, one_line
from runner.common.stop_signals import Preempted
from runner.config.precheck import refuse_bad_command_line
from runner.config.schema import CONF, register_configs, validate
from runner.training import describe, processes

log = logging.getLogger("runner")
EXIT_STOPPED = 75  # EX_TEMPFAIL: stopped by a signal after a checkpoint; run the same command to go on
EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C (128 + SIGINT), also after the checkpoint Ctrl-C asks for


@hydra.main(config_path=CONF, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Returns the best validation metric (evaluate.metric), the objective a sweeper optimizes."""
    hydra_cfg = HydraConfig.get()
    if processes.from_environment().is_main:  # the first lines at once, before torch is imported
        describe.log_what_runs(cfg, Path(hydra_cfg.runtime.output_dir))
    from runner.run import (  # after Hydra has parsed --help/--cfg: those stay fast
        discard_folder_without_a_run,
        train_and_evaluate,
    )

    try:
        # once, before anything is built: the checkpoints' config, and so the evaluator, carry the choice
        from runner.data.standardization import standardize_as_the_weights_expect

        standardization = standardize_as_the_weights_expect(cfg, list(hydra_cfg.overrides.task))
        if standardization and processes.from_environment().is_main:
            log.info("%s", standardization)
        if cfg.trainer.dry_run:
            from runner.dry_run import dry_run

            result = dry_run(cfg)
            discard_folder_without_a_run(Path(hydra_cfg.runtime.output_dir), "the dry run trained elsewhere")
        else:
            from runner.dry_run import (
                dry_run_check,  # the preflight's dry run (checks.preflight=true)
            )

            result = train_and_evaluate(cfg, Path(hydra_cfg.runtime.output_dir), {"dry_run": dry_run_check})
    except UserError as error:
        log.error("%s", one_line(error))
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise  # the sweeper records the failed trial and goes on
        discard_folder_without_a_run(Path(hydra_cfg.runtime.output_dir), "the run was refused before it started")
        sys.exit(2)
    except Preempted as stopped:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise
        sys.exit(0 if stopped.requeued else EXIT_INTERRUPTED if stopped.by_user else EXIT_STOPPED)
    except KeyboardInterrupt:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise
        log.error("stopped at once by Ctrl-C: the checkpoints written so far are kept. To go on: continue with the "
                  "same command and hydra.run.dir=%s", hydra_cfg.runtime.output_dir)
        sys.exit(EXIT_INTERRUPTED)
    return None if result["best"] is None else result["best"][cfg.evaluate.metric]


def cli() -> None:
    """`python -m runner ...` and the `runner` console command (pyproject's [project.scripts])."""
    from runner.common import stop_signals

    stop_signals.catch_from_now_on()  # (python -m runner caught them already, before its imports)
    try:
        register_configs()
        # before Hydra makes a run directory; the `_target_` callables (they import torch, seconds) after the
        # first log line, by train_and_evaluate's validate (a refusal there removes the new folder)
        refuse_bad_command_line("train", partial(validate, import_targets=False), sys.argv[1:])
        main()
    finally:
        stop_signals.ignore_from_now_on()

