"""python -m runner.check +experiment=flowers [checks=[overfit_batch,loss_at_init]]

The command is runner/cli/check.py; installed, it is the `runner-check` command.
"""

from runner.cli.check import cli

if __name__ == "__main__":
    cli()
