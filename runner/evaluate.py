"""python -m runner.evaluate run_dir=outputs/<run> [split=val|test] [watch=true] [tta=flip] [checkpoint=PATH]

The command is runner/cli/evaluate.py; installed, it is the `runner-evaluate` command.
"""

if __name__ == "__main__":  # python -m runner.evaluate: catch the stop signals before the imports, which take seconds
    from runner.common import stop_signals

    stop_signals.catch_from_now_on()

from runner.cli.evaluate import cli  # noqa: E402

if __name__ == "__main__":
    cli()
