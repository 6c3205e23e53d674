"""python -m runner.inspect_data +experiment=flowers

The entry of `python -m runner.inspect_data`; the work is in runner/checks/inspect_data.py.
"""

from runner.checks.inspect_data import inspect
from runner.tool import run_tool


def cli() -> None:
    """`python -m runner.inspect_data` and the `runner-inspect-data` console command."""
    run_tool("inspect_data", inspect)


if __name__ == "__main__":
    cli()
