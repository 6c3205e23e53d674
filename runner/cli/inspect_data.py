"""python -m runner.inspect_data +experiment=flowers

The data report of a training config; the work is in runner/checks/data_report.py.
"""

from pathlib import Path

from omegaconf import DictConfig

from runner.cli.tool_app import run_tool

HELP = """runner.inspect_data: "know your data": report.md with figures of the training config's data (samples as
stored and as the model sees them, examples per class, histograms, the outlier gallery).

python -m runner.inspect_data +experiment=flowers
python -m runner.inspect_data +experiment=flowers checks.checkpoint=RUN/checkpoints/epoch-0030.pt
(installed, `runner-inspect-data` is the same command; it writes into outputs/tools/<name>/ and takes
the training's settings, below)
"""


def report(cfg: DictConfig, run_dir: Path) -> int:
    from runner.checks.data_report import (
        inspect,  # torch: after Hydra has answered --help and Tab completion
    )

    return inspect(cfg, run_dir)


def cli() -> None:
    """`python -m runner.inspect_data` and the `runner-inspect-data` console command."""
    run_tool("inspect_data", report, HELP)
