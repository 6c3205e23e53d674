"""What a run folder holds is data to check, not to trust (issue 21, items 7 and 15).

A run's ranking, best.json, runs-table row and test ledger name only checkpoints inside that run
folder; a file of the wrong shape is one line naming it (or a warning where the command can go on).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from runner.cli.evaluate import evaluate
from runner.common.errors import UserError
from runner.evaluation import results
from runner.evaluation.run_table import table
from runner.run import train_and_evaluate
from tests.conftest import TINY, compose_config


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two evaluated two-epoch runs, A and B, of different seeds."""
    root = tmp_path_factory.mktemp("two")
    runs = []
    for name, seed in (("A", 1), ("B", 2)):
        run_dir = root / name
        train_and_evaluate(compose_config([*TINY, "model=linear", f"trainer.seed={seed}",
                                           "evaluate.after_training=true", "evaluate.galleries=false"]), run_dir)
        runs.append(run_dir)
    return runs[0], runs[1]


def copies(two_runs, tmp_path) -> tuple[Path, Path]:
    return tuple(Path(shutil.copytree(run, tmp_path / run.name)) for run in two_runs)


def evaluator(*overrides):
    return compose_config(list(overrides), config_name="evaluate")


def named_checkpoints(run_dir: Path) -> set[str]:
    """Every checkpoint the run's best.json, runs-table row and test ledger name."""
    best = json.loads((run_dir / "eval" / "best.json").read_text())
    names = {best["checkpoint"], best["metrics"]["checkpoint"]}
    names |= {row["checkpoint"] for row in table(run_dir.parent) if row["run"] == run_dir.name}
    ledger = run_dir / "eval" / "test_ledger.jsonl"
    if ledger.exists():
        names |= {json.loads(line)["checkpoint"] for line in ledger.read_text().splitlines()}
    return names


def test_another_runs_checkpoint_with_run_dir_is_refused_in_one_line(two_runs, tmp_path):
    a, b = copies(two_runs, tmp_path)
    rows_before = (a / "eval" / "metrics.jsonl").read_text()
    foreign = b / "checkpoints" / "epoch-0002.pt"
    with pytest.raises(UserError) as refused:
        evaluate(evaluator(f"run_dir={a}", f"checkpoint={foreign}"))
    said = str(refused.value)
    assert str(foreign) in said and "outside" in said and "Fix:" in said and "\n" not in said
    assert (a / "eval" / "metrics.jsonl").read_text() == rows_before
    evaluate(evaluator(f"run_dir={a}"))
    evaluate(evaluator(f"run_dir={a}", "split=test"))
    assert all(name.startswith("checkpoints/epoch-") for name in named_checkpoints(a))


@pytest.mark.parametrize("crafted", ["absolute", "dot-dot", "linked file"])
def test_a_crafted_row_naming_an_outside_checkpoint_is_never_ranked(two_runs, tmp_path, crafted, caplog):
    a, b = copies(two_runs, tmp_path)
    foreign = b / "checkpoints" / "epoch-0002.pt"
    own = json.loads((a / "eval" / "metrics.jsonl").read_text().splitlines()[-1])
    if crafted == "linked file":  # a checkpoint file in A that is a link to B's
        (a / "checkpoints" / "epoch-0003.pt").symlink_to(foreign)
        name = "checkpoints/epoch-0003.pt"
    else:
        name = str(foreign) if crafted == "absolute" else "checkpoints/../../B/checkpoints/epoch-0002.pt"
    row = {**own, "checkpoint": name, "epoch": 3, "top1": 1.0, "loss": 0.0, "balanced_accuracy": 1.0}
    with open(a / "eval" / "metrics.jsonl", "a") as rows:
        rows.write(json.dumps(row) + "\n")
    evaluate(evaluator(f"run_dir={a}"))
    evaluate(evaluator(f"run_dir={a}", "split=test"))
    assert named_checkpoints(a) <= {"checkpoints/epoch-0001.pt", "checkpoints/epoch-0002.pt"}
    assert "outside the run" in caplog.text
    ranked = results.ranked(results.read_rows(a / "eval"), "top1", "auto", "none", a)
    assert all(not r["checkpoint"].startswith("/") and ".." not in r["checkpoint"] and r["epoch"] != 3 for r in ranked)


def test_a_checkpoint_with_weights_on_meta_is_skipped_with_its_reason_and_the_others_evaluated(two_runs, tmp_path,
                                                                                              caplog):
    import torch

    a, _ = copies(two_runs, tmp_path)
    shutil.rmtree(a / "eval")
    path = a / "checkpoints" / "epoch-0001.pt"
    state = torch.load(path, weights_only=True)
    state["model"] = {key: torch.empty_like(value, device="meta") for key, value in state["model"].items()}
    torch.save(state, path)
    best = evaluate(evaluator(f"run_dir={a}"))
    assert best["checkpoint"] == "checkpoints/epoch-0002.pt"
    assert [r["epoch"] for r in results.read_rows(a / "eval")] == [2]
    assert "epoch-0001.pt" in caplog.text and "meta" in caplog.text
    with pytest.raises(UserError, match="epoch-0001.pt .*meta.*Fix:"):
        train_and_evaluate(compose_config([*TINY, "model=linear", "trainer.seed=1", "evaluate.galleries=false",
                                           f"resume={path}"]), tmp_path / "resumed")


@pytest.mark.parametrize("file", ["run.json", "eval/best.json"])
@pytest.mark.parametrize("content", [[1, 2], "finished", 3])
def test_the_runs_table_skips_a_run_whose_file_is_of_the_wrong_type_with_a_warning(two_runs, tmp_path, caplog, file,
                                                                                    content):
    a, b = copies(two_runs, tmp_path)
    (a / file).write_text(json.dumps(content))
    rows = table(tmp_path)
    assert [r["run"] for r in rows] == ["B"]
    assert f"{a / file}" in caplog.text and "skipped" in caplog.text


def test_a_ledger_line_naming_an_outside_checkpoint_is_not_counted_as_a_look(two_runs, tmp_path, caplog):
    a, b = copies(two_runs, tmp_path)
    crafted = {"time": "2026-01-01T00:00:00", "checkpoint": str(b / "checkpoints" / "epoch-0001.pt"), "tta": "none",
               "top1": 1.0}
    (a / "eval" / "test_ledger.jsonl").write_text(json.dumps(crafted) + "\n")
    evaluate(evaluator(f"run_dir={a}", "split=test"))
    assert "outside the run" in caplog.text and "has been looked at" not in caplog.text
    looks = [json.loads(line) for line in (a / "eval" / "test_ledger.jsonl").read_text().splitlines()]
    assert looks[-1]["checkpoint"].startswith("checkpoints/epoch-")


def test_a_row_whose_metric_is_not_a_finite_number_is_never_ranked(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    rows = []
    for epoch, top1 in ((1, 0.5), (2, float("nan")), (3, float("inf")), (4, None), (5, 0.6)):
        (tmp_path / "checkpoints" / f"epoch-000{epoch}.pt").touch()
        rows.append({"checkpoint": f"checkpoints/epoch-000{epoch}.pt", "epoch": epoch, "split": "val", "tta": "none",
                     "top1": top1})
    assert [r["epoch"] for r in results.ranked(rows, "top1", "auto", "none", tmp_path)] == [5, 1]
