"""python -m runner.label +experiment=flowers split=val n=100

The command is runner/cli/label.py; installed, it is the `runner-label` command.
"""

from runner.cli.label import cli

if __name__ == "__main__":
    cli()
