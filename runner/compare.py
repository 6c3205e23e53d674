"""python -m runner.compare RUN_A RUN_B [out=FOLDER]    (or two checkpoint files, one SWEEP_DIR, GROUP_A GROUP_B)

The command is runner/cli/compare.py; installed, it is the `runner-compare` command.
"""

from runner.cli.compare import cli

if __name__ == "__main__":
    cli()
