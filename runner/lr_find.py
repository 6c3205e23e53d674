"""python -m runner.lr_find +experiment=flowers [lr_find.steps=200 lr_find.method=valley]

The command is runner/cli/lr_find.py; installed, it is the `runner-lr-find` command.
"""

from runner.cli.lr_find import cli

if __name__ == "__main__":
    cli()
