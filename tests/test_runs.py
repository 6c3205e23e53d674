"""python -m runner.runs: every run in one table, from run.json, .hydra/ and eval/ only."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest
import yaml

from runner.evaluation.run_table import formatted, table
from runner.runs import cli


def fake_run(root: Path, name: str, status: str, model: str, top1: float | None, epochs_done: int | None = None,
             dirty: bool = False) -> Path:
    """A run folder as `python -m runner` leaves it (only the files the table reads)."""
    run_dir = root / name / f"2026-11-23_10-00-{len(list(root.rglob('run.json'))):02d}.000"
    (run_dir / ".hydra").mkdir(parents=True)
    record = {"status": status, "start_time": "2026-11-23T10:00:00", "overrides": [f"model={model}", "optimizer.lr=0.01"],
              "git": {"commit": "0123456789abcdef", "dirty": dirty}}
    if epochs_done is not None:
        record["epochs_done"] = epochs_done
    (run_dir / "run.json").write_text(json.dumps(record))
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"name": name, "trainer": {"epochs": 20}}))
    (run_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": {"model": model}}}}))
    if top1 is not None:
        (run_dir / "eval").mkdir()
        (run_dir / "eval" / "best.json").write_text(json.dumps({
            "checkpoint": "checkpoints/epoch-0010.pt", "epoch": 10, "metric": "top1", "value": top1,
            "metrics": {"top1_ci95": [top1 - 0.05, top1 + 0.04]}}))
    return run_dir


@pytest.fixture
def outputs(tmp_path) -> Path:
    fake_run(tmp_path, "flowers", "finished", "convnet", 0.91, epochs_done=20, dirty=True)
    fake_run(tmp_path, "flowers", "failed: UserError: the loss became non-finite", "mlp", None)
    fake_run(tmp_path, "flowers", "preempted: stopped by SIGUSR1 at step 300", "convnet", 0.62)
    fake_run(tmp_path, "digits", "running", "mlp", 0.97)
    return tmp_path


def test_each_run_is_a_row_with_its_status_version_overrides_and_best(outputs):
    rows = table(outputs, sort="best")
    assert [r["status"] for r in rows] == ["running", "finished", "preempted", "failed"]  # by best top1, none last
    finished = rows[1]
    assert finished["git"] == "01234567+dirty" and finished["epochs"] == "20/20"
    assert finished["overrides"] == "model=convnet optimizer.lr=0.01" and finished["ci95"] == "[0.8600, 0.9500]"
    assert finished["checkpoint"] == "checkpoints/epoch-0010.pt" and finished["name"] == "flowers"
    assert [r["best"] for r in table(outputs, sort="-best")][:3] == [0.62, 0.91, 0.97]


def test_where_filters_by_the_groups_chosen_and_the_overrides(outputs):
    assert {r["status"] for r in table(outputs, where=["model=convnet"])} == {"finished", "preempted"}
    assert [r["name"] for r in table(outputs, where=["model=mlp", "status=running"])] == ["digits"]


def test_csv_and_markdown(outputs, capsys):
    cli([str(outputs), "format=csv", "sort=best"])
    parsed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(parsed) == 4 and parsed[0]["best"] == "0.9700" and parsed[3]["best"] == "-"
    text = formatted(table(outputs), "markdown")
    assert text.splitlines()[0].startswith("| start | name | run | status") and text.count("\n") == 6


@pytest.mark.parametrize(("args", "said"), [
    (["sort=colour"], "sort='colour' is not a column. Fix: sort=best"),
    (["where=convnet"], "where='convnet' is not KEY=VALUE. Fix: where=model=convnet"),
    (["format=html"], "format='html' is not known. Fix: format=table, csv or markdown"),
    (["/nonexistent"], "/nonexistent is not a folder"),
    (["colour=red"], "'colour=red' is not a setting of runner.runs"),
])
def test_bad_arguments_are_one_line_and_exit_2(outputs, args, said, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli([*([] if args[0].startswith("/") else [str(outputs)]), *args])
    assert stopped.value.code == 2 and said in capsys.readouterr().err


def test_two_hundred_runs_read_quickly(tmp_path):
    for index in range(200):
        fake_run(tmp_path, f"sweep{index % 4}", "finished", "convnet", index / 200)
    started = time.perf_counter()
    rows = table(tmp_path, sort="best")
    seconds = time.perf_counter() - started
    assert len(rows) == 200 and rows[0]["best"] == 0.995
    assert seconds < 3, f"{seconds:.2f} s for 200 runs"  # about 0.1 s on the 2-core CI machine
