"""python -m runner.check +experiment=flowers [checks=[overfit_batch,loss_at_init]]

The entry of `python -m runner.check`; the work is in runner/checks/table.py.
"""

from functools import partial

from runner.checks.table import check
from runner.dry_run import dry_run_check
from runner.tool import run_tool


def cli() -> None:
    """`python -m runner.check` and the `runner-check` console command."""
    run_tool("check", partial(check, entry_checks={"dry_run": dry_run_check}))


if __name__ == "__main__":
    cli()
