"""python -m runner.lr_find +experiment=flowers [lr_find.steps=200 lr_find.method=valley]

The entry of `python -m runner.lr_find`; the work is in runner/checks/lr_find.py.
"""

from runner.checks.lr_find import lr_find
from runner.tool import run_tool


def cli() -> None:
    """`python -m runner.lr_find` and the `runner-lr-find` console command."""
    run_tool("lr_find", lr_find)


if __name__ == "__main__":
    cli()
