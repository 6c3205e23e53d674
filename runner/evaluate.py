"""python -m runner.evaluate run_dir=outputs/<run> [split=val|test] [watch=true] [tta=flip] [checkpoint=PATH]

The offline evaluator's entry (conf/evaluate.yaml); the work is in runner/evaluation/.
"""

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from runner.config import CONF, register_configs, validate_evaluate_command
from runner.errors import UserError, one_line
from runner.precheck import refuse_bad_command_line

log = logging.getLogger("runner.evaluate")


def evaluate(settings: DictConfig) -> dict | None:
    """What `python -m runner.evaluate` does with its settings: an ensemble, a watch, or one run."""
    from runner.evaluation.ensemble import evaluate_ensemble
    from runner.evaluation.evaluate import evaluate_run
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


def cli() -> None:
    """`python -m runner.evaluate` and the `runner-evaluate` console command."""
    register_configs()
    refuse_bad_command_line("evaluate", validate_evaluate_command, sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
