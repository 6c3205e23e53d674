"""python -m runner.inspect_data +experiment=flowers

The command is runner/cli/inspect_data.py; installed, it is the `runner-inspect-data` command.
"""

from runner.cli.inspect_data import cli

if __name__ == "__main__":
    cli()
