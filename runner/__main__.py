"""python -m runner [+experiment=NAME] [group=option] [key=value ...]   (the training command).

The command is runner/cli/train.py; installed, it is the `runner` command.
"""

if __name__ == "__main__":  # python -m runner: catch the stop signals before the imports, which take seconds
    from runner.common import stop_signals

    stop_signals.catch_from_now_on()

from runner.cli.train import cli  # noqa: E402

if __name__ == "__main__":
    cli()
