"""python -m runner.check +experiment=flowers [checks=[overfit_batch,loss_at_init]]

The sanity checks of a training config, one table; the work is in runner/checks/table.py.
"""

from pathlib import Path

from omegaconf import DictConfig

from runner.cli.tool_app import run_tool

HELP = """runner.check: the practice's sanity checks of a training config, one row each: the figure measured,
what was expected, PASS, WARN or FAIL, and the fix. Exits non-zero on a FAIL.

python -m runner.check +experiment=flowers                                     every check
python -m runner.check +experiment=flowers checks=[overfit_batch,loss_at_init]  some of them
(installed, `runner-check` is the same command; it writes into outputs/tools/<name>/ and takes the
training's settings, below)
"""


def run_checks(cfg: DictConfig, run_dir: Path) -> int:
    # imported here, after Hydra has answered --help and Tab completion: the checks import torch
    from runner.checks.table import check
    from runner.dry_run import dry_run_check

    return check(cfg, run_dir, entry_checks={"dry_run": dry_run_check})


def cli() -> None:
    """`python -m runner.check` and the `runner-check` console command."""
    run_tool("check", run_checks, HELP)
