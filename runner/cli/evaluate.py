"""python -m runner.evaluate run_dir=outputs/<run> [split=val|test] [watch=true] [tta=flip] [checkpoint=PATH]
[weights=all|raw|ema|swa]

The offline evaluator's command (conf/evaluate.yaml); the work is in runner/evaluation/.
`python -m runner.evaluate` enters through runner/evaluate.py, which catches the stop signals
before importing this module.
"""

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from runner.common import stop_signals
from runner.common.errors import UserError, one_line
from runner.common.stop_signals import Preempted
from runner.config.precheck import refuse_bad_command_line
from runner.config.schema import CONF, register_configs, validate_evaluate_command

log = logging.getLogger("runner.evaluate")
EXIT_STOPPED = 75  # EX_TEMPFAIL: stopped by a signal between two checkpoints; the same command evaluates the rest
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)


def evaluate(settings: DictConfig) -> dict | None:
    """What `python -m runner.evaluate` does with its settings: an ensemble, a watch, or one run."""
    from runner.evaluation.ensemble import evaluate_ensemble
    from runner.evaluation.evaluator import evaluate_run
    from runner.evaluation.run_dirs import run_directory
    from runner.evaluation.watch import wait_for_run, watch

    if settings.ensemble or settings.ensemble_top_k:
        return evaluate_ensemble(settings)
    if settings.watch:
        return watch(wait_for_run(settings), settings)
    only = Path(settings.checkpoint) if settings.checkpoint else None
    return evaluate_run(run_directory(settings), settings, only)


@hydra.main(config_path=CONF, config_name="evaluate", version_base="1.3")
def main(settings: DictConfig) -> None:
    try:
        validate_evaluate_command(settings)
        evaluate(settings)
    except UserError as error:
        log.error("%s", one_line(error))
        sys.exit(2)
    except Preempted as stopped:
        sys.exit(stop(stopped, requeue=not settings.watch))
    except KeyboardInterrupt:  # a second Ctrl-C
        log.error("stopped at once by Ctrl-C: the rows written so far are kept; the same command evaluates the rest")
        sys.exit(EXIT_INTERRUPTED)


def stop(stopped: Preempted, requeue: bool) -> int:
    """A stop signal between two checkpoints: one line, and the exit code. A SLURM job requeues itself (exit 0),
    unless it watches a run (watch=true: the training job it follows requeues itself, and a second requeue of
    the same job from its evaluator would cut short the trainer's checkpoint)."""
    stopped.requeued = requeue and not stopped.by_user and stop_signals.requeue_slurm_job()
    rest = "the requeued job evaluates the rest" if stopped.requeued else "the same command evaluates the rest"
    log.warning("%s; the rows written so far are kept, %s", stopped, rest)
    return 0 if stopped.requeued else EXIT_INTERRUPTED if stopped.by_user else EXIT_STOPPED


def cli() -> None:
    """`python -m runner.evaluate` and the `runner-evaluate` console command."""
    stop_signals.catch_from_now_on()  # (python -m runner.evaluate caught them already, before its imports)
    try:
        register_configs()
        refuse_bad_command_line("evaluate", validate_evaluate_command, sys.argv[1:])
        main()
    finally:
        stop_signals.ignore_from_now_on()

