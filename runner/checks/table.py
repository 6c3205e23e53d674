"""python -m runner.check +experiment=flowers [checks=[overfit_batch,loss_at_init]]

Runs the practice's sanity checks (runner/checks.py) on the composed experiment and prints a
table: check, figure measured, expected, PASS/WARN/FAIL, and the fix. Writes checks.json and
the table (to TensorBoard text) into its run directory; exits non-zero on a FAIL.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig

from runner.checks import checks_all as checks
from runner.errors import UserError

log = logging.getLogger("runner.check")


def selected(cfg: DictConfig) -> list[str]:
    only = cfg.checks.only
    names = list(checks.CHECKS) if only == "all" else list(only)
    unknown = [n for n in names if n not in checks.CHECKS]
    if unknown:
        raise UserError(f"checks={unknown} are not checks. Fix: checks=[{','.join(checks.CHECKS)}] (any of them)")
    return names


def table(results: list[checks.Result]) -> str:
    rows = [("check", "figure", "expected", "verdict", "fix")]
    rows += [(r.check, r.figure, r.expected, r.verdict, r.fix) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
                     for row in rows)


def markdown(results: list[checks.Result]) -> str:
    lines = ["| check | figure | expected | verdict | fix |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r.check} | {r.figure} | {r.expected} | **{r.verdict}** | {r.fix} |" for r in results]
    return "\n".join(lines)


def write(results: list[checks.Result], run_dir: Path, step: int = 0) -> None:
    """checks.json and the table as TensorBoard text, in run_dir."""
    from torch.utils.tensorboard import SummaryWriter

    (run_dir / "checks.json").write_text(json.dumps([asdict(r) for r in results], indent=2, default=str) + "\n")
    with SummaryWriter(str(run_dir / "tb")) as writer:
        writer.add_text("checks", markdown(results), step)


def check(cfg: DictConfig, run_dir: Path) -> int:
    from runner.runtime import pick_device

    names = selected(cfg)
    setup = checks.setup_for(cfg, pick_device(str(cfg.trainer.device), key="trainer.device"))
    results = checks.run(setup, names)
    write(results, run_dir)
    print(table(results))
    print(f"\nchecks.json: {run_dir / 'checks.json'}")
    failed = [r.check for r in results if r.verdict == "FAIL"]
    if failed:
        log.error("FAIL: %s", ", ".join(failed))
    return 1 if failed else 0
