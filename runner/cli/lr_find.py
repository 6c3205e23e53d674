"""python -m runner.lr_find +experiment=flowers [lr_find.steps=200 lr_find.method=valley]

The learning-rate range test of a training config; the work is in runner/checks/lr_range_test.py.
"""

from pathlib import Path

from omegaconf import DictConfig

from runner.cli.tool_app import run_tool

HELP = """runner.lr_find: the learning-rate range test: raises the learning rate until the loss diverges, writes
lr_find.png and lr_find.csv, and prints the suggestion as a ready override (optimizer.lr=...).

python -m runner.lr_find +experiment=flowers
python -m runner.lr_find +experiment=flowers lr_find.steps=200 lr_find.method=valley
(installed, `runner-lr-find` is the same command; it writes into outputs/tools/<name>/ and takes the
training's settings, below)
"""


def range_test(cfg: DictConfig, run_dir: Path) -> int:
    from runner.checks.lr_range_test import (
        lr_find,  # torch: after Hydra has answered --help and Tab completion
    )

    return lr_find(cfg, run_dir)


def cli() -> None:
    """`python -m runner.lr_find` and the `runner-lr-find` console command."""
    run_tool("lr_find", range_test, HELP)
