"""python -m runner.check +experiment=flowers [checks=[overfit_batch,loss_at_init]]

Runs the practice's sanity checks (registry.py: the data checks of data.py, the model checks
of model.py, the short trainings of training.py) on the composed experiment and prints a
table: check, figure measured, expected, PASS/WARN/FAIL, and the fix. Writes checks.json and
the table (to TensorBoard text) into its run directory; exits non-zero on a FAIL.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig

from runner.checks.registry import CHECKS, ENTRY_CHECKS, run
from runner.checks.setup import Result, setup_for
from runner.common.errors import UserError
from runner.common.io import write_json_atomic
from runner.common.run_folders import tensorboard_folder

log = logging.getLogger("runner.check")


def selected(cfg: DictConfig) -> list[str]:
    only, known = cfg.checks.only, [*CHECKS, *ENTRY_CHECKS]
    names = known if only == "all" else list(only)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"checks={unknown} are not checks. Fix: checks=[{','.join(known)}] (any of them)")
    return names


def table(results: list[Result]) -> str:
    rows = [("check", "figure", "expected", "verdict", "fix")]
    rows += [(r.check, r.figure, r.expected, r.verdict, r.fix) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
                     for row in rows)


def markdown(results: list[Result]) -> str:
    lines = ["| check | figure | expected | verdict | fix |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r.check} | {r.figure} | {r.expected} | **{r.verdict}** | {r.fix} |" for r in results]
    return "\n".join(lines)


def write(results: list[Result], run_dir: Path, step: int = 0) -> None:
    """checks.json and the table as TensorBoard text, in run_dir."""
    from torch.utils.tensorboard import SummaryWriter

    # the one atomic writer: a requeued run's preflight writes checks.json again into the same folder
    write_json_atomic(run_dir / "checks.json", [asdict(r) for r in results])
    with SummaryWriter(tensorboard_folder(run_dir)) as writer:
        writer.add_text("checks", markdown(results), step)


def check(cfg: DictConfig, run_dir: Path, entry_checks: dict | None = None) -> int:
    """The selected checks; `entry_checks` are those that run the whole job (registry.ENTRY_CHECKS)."""
    from runner.common.runtime import pick_device

    names = selected(cfg)
    setup = setup_for(cfg, pick_device(str(cfg.trainer.device), key="trainer.device"))
    results = run(setup, names, entry_checks)
    write(results, run_dir)
    print(table(results))
    print(f"\nchecks.json: {run_dir / 'checks.json'}")
    failed = [r.check for r in results if r.verdict == "FAIL"]
    if failed:
        log.error("FAIL: %s", ", ".join(failed))
    return 1 if failed else 0
