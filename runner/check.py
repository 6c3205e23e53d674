"""python -m runner.check +experiment=flowers [checks=[overfit_batch,loss_at_init]]

The entry of `python -m runner.check`; the work is in runner/checks/table.py.
"""

from runner.checks.table import check
from runner.tool import run_tool


def cli() -> None:
    """`python -m runner.check` and the `runner-check` console command."""
    run_tool("check", check)


if __name__ == "__main__":
    cli()
