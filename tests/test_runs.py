"""python -m runner.runs: every run in one table, from run.json, .hydra/ and eval/ only."""

from __future__ import annotations

import csv
import io
import json
import os
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


def test_failed_before_run_json_is_listed_with_the_last_error_line(tmp_path):
    fake_run(tmp_path, "flowers", "finished", "convnet", 0.91)
    crashed = tmp_path / "flowers" / "2026-11-23_11-00-00.000"
    (crashed / ".hydra").mkdir(parents=True)
    (crashed / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"name": "flowers", "trainer": {"epochs": 20}}))
    (crashed / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["+experiment=flowers"]))
    (crashed / "train.log").write_text(
        "2026-11-23 11:00:00.001 INFO runner: training flowers\n"
        "2026-11-23 11:00:01.002 ERROR runner: the run failed\nTraceback (most recent call last):\n"
        '  File "runner/data/datasets.py", line 12, in build\n'
        "PIL.UnidentifiedImageError: cannot identify image file 'jpg/image_00042.jpg'\n")
    tool = tmp_path / "tools" / "check" / "2026-11-23_11-00-00.000"  # another command's folder: not a run
    (tool / ".hydra").mkdir(parents=True)
    (tool / "check.log").write_text("fine\n")
    rows = table(tmp_path)
    assert [r["status"] for r in rows] == ["finished", "failed"]
    failed = rows[1]
    assert failed["other"] == "PIL.UnidentifiedImageError: cannot identify image file 'jpg/image_00042.jpg'"
    assert failed["overrides"] == "+experiment=flowers" and failed["start"] == "2026-11-23 11:00:00"
    assert failed["best"] is None and failed["name"] == "flowers"


def test_the_table_fits_100_columns_without_sweep_plumbing(tmp_path, monkeypatch, capsys):
    for trial in range(3):
        run_dir = fake_run(tmp_path, "sweep", "finished", "convnet", 0.5 + trial / 10)
        record = json.loads((run_dir / "run.json").read_text())
        record["overrides"] = [f"optimizer.lr={10.0 ** -trial}", "+experiment=flowers", "trainer.epochs=30",
                               "sweep.study=flowers-lr-2026-11-23", "sweep.storage=sqlite:////home/me/outputs/x.db",
                               f"sweep.trial={trial}", f"sweep.trial_id={trial + 1}", "hydra.job.chdir=false",
                               "dataset.augment=strong", f"model.width={64 * (trial + 1)}"]
        (run_dir / "run.json").write_text(json.dumps(record))
    monkeypatch.setenv("COLUMNS", "100")
    cli([str(tmp_path)])
    shown = capsys.readouterr().out
    assert "sweep." not in shown and "hydra." not in shown, shown
    assert max(len(line) for line in shown.splitlines()) <= 100, shown
    words = " ".join(shown.split())
    assert "every run: +experiment=flowers trainer.epochs=30 dataset.augment=strong" in words  # once, not each row
    assert "optimizer.lr=0.01 model.width=192" in words and shown.count("+experiment") == 1


def test_a_run_starting_up_reads_starting_not_failed(tmp_path):
    starting = tmp_path / "flowers" / "2026-11-23_12-00-00.000"
    (starting / ".hydra").mkdir(parents=True)
    (starting / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"name": "flowers", "trainer": {"epochs": 20}}))
    (starting / "train.log").write_text("2026-11-23 12:00:00.001 INFO runner: training flowers\n")
    (starting / ".run.lock").write_text("")  # the lock is taken, its pid not written yet
    assert [r["status"] for r in table(tmp_path)] == ["starting"]
    old = time.time() - 120  # a log untouched for two minutes and no run.json: it died
    os.utime(starting / "train.log", (old, old))
    assert [r["status"] for r in table(tmp_path)] == ["failed"]
