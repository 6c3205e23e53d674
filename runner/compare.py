"""python -m runner.compare RUN_A RUN_B [out=FOLDER]    (or two checkpoint files, or one SWEEP_DIR)

The command is runner/cli/compare.py; installed, it is the `runner-compare` command.
"""

from runner.cli.compare import cli

if __name__ == "__main__":
    cli()
