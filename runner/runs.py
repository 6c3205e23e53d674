"""python -m runner.runs [FOLDER] [sort=best] [where=model=convnet ...] [group_by=auto] [format=table|csv|markdown]

The command is runner/cli/runs.py; installed, it is the `runner-runs` command.
"""

from runner.cli.runs import cli

if __name__ == "__main__":
    cli()
