"""An evaluation with other settings than the run's own never replaces the run's result (issue 21, item 17).

The run's best (eval/best.json, its figures, its runs-table row) is chosen among the rows of the
run's own evaluation settings; tta, another batch size or precision, and ensembles are written
beside it, labelled, and shown as such.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from runner.cli.evaluate import evaluate
from runner.evaluation import results
from runner.evaluation.run_table import formatted, table
from runner.run import train_and_evaluate
from tests.conftest import TINY, compose_config


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> Path:
    """A three-epoch run, evaluated with its own settings, figures drawn."""
    run_dir = tmp_path_factory.mktemp("explore") / "run"
    train_and_evaluate(compose_config([*TINY, "model=linear", "trainer.epochs=3", "evaluate.after_training=true"]),
                       run_dir)
    return run_dir


def copy(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def evaluator(run_dir: Path, *overrides: str):
    return evaluate(compose_config([f"run_dir={run_dir}", *overrides], config_name="evaluate"))


def figures(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run_dir / "eval").glob("*.png"))}


@pytest.mark.parametrize(("overrides", "label"), [
    (["tta=flip"], "tta=flip"),
    (["batch_size=5"], "batch_size=5"),
    (["precision=bf16"], "precision=bf16"),
    (["tta=flip", "batch_size=3"], "tta=flip, batch_size=3"),
])
def test_other_settings_are_written_beside_the_runs_best_and_labelled(evaluated, tmp_path, capsys, overrides, label):
    run_dir = copy(evaluated, tmp_path)
    own_best = (run_dir / "eval" / "best.json").read_text()
    own_figures = figures(run_dir)
    own_rows = len(results.read_rows(run_dir / "eval"))
    capsys.readouterr()
    explored = evaluator(run_dir, *overrides)
    printed = capsys.readouterr().out
    assert (run_dir / "eval" / "best.json").read_text() == own_best  # the run's result, untouched
    assert figures(run_dir) == own_figures
    beside = json.loads((run_dir / "eval" / f"best.{results.variant_slug(label)}.json").read_text())
    assert beside["variant"] == label and beside["checkpoint"] == explored["checkpoint"]
    rows = results.read_rows(run_dir / "eval")
    assert len(rows) == 2 * own_rows  # evaluated anew, not taken for the run's own rows
    assert {r["variant"] for r in rows[own_rows:]} == {label}
    assert label in printed and "best.json" in printed
    row = next(r for r in table(run_dir.parent) if r["run"] == "run")
    assert row["best"] == json.loads(own_best)["value"] and row["checkpoint"] == json.loads(own_best)["checkpoint"]
    assert label in row["other"] and label in formatted([row], "table")
    evaluator(run_dir)  # and the run's own settings again: nothing new, the same best
    assert (run_dir / "eval" / "best.json").read_text() == own_best


def test_a_best_json_an_older_evaluator_chose_from_tta_rows_is_put_right(evaluated, tmp_path):
    run_dir = copy(evaluated, tmp_path)
    own = json.loads((run_dir / "eval" / "best.json").read_text())
    evaluator(run_dir, "tta=flip")
    flip_rows = [r for r in results.read_rows(run_dir / "eval") if r["tta"] == "flip"]
    for row in flip_rows:  # as an older evaluator wrote them: no label
        del row["variant"], row["precision"], row["batch_size"]
    older = {key: value for key, value in own.items() if key != "variant"}  # an older evaluator wrote no variant
    (run_dir / "eval" / "best.json").write_text(json.dumps({**older, "tta": "flip", "metrics": flip_rows[0],
                                                            "checkpoint": flip_rows[0]["checkpoint"]}))
    row = next(r for r in table(run_dir.parent) if r["run"] == "run")
    assert "tta=flip" in row["metric"]  # shown as such
    evaluator(run_dir)
    assert json.loads((run_dir / "eval" / "best.json").read_text())["checkpoint"] == own["checkpoint"]
    assert json.loads((run_dir / "eval" / "best.json").read_text())["tta"] == "none"


def test_an_ensemble_and_a_test_look_with_tta_leave_the_runs_best(evaluated, tmp_path):
    run_dir = copy(evaluated, tmp_path)
    own_best = (run_dir / "eval" / "best.json").read_text()
    evaluator(run_dir, "ensemble_top_k=2", "tta=flip")
    evaluator(run_dir, "split=test", "tta=flip")
    assert (run_dir / "eval" / "best.json").read_text() == own_best
    look = json.loads((run_dir / "eval" / "test_ledger.jsonl").read_text().splitlines()[-1])
    assert look["checkpoint"] == json.loads(own_best)["checkpoint"] and look["variant"] == "tta=flip"


def test_the_runs_own_settings_come_from_its_config(tmp_path):
    """A run that evaluates with tta=flip itself: its flip rows are its own, a plain evaluation is the exploration."""
    run_dir = tmp_path / "run"
    train_and_evaluate(compose_config([*TINY, "model=linear", "evaluate.after_training=true", "evaluate.tta=flip",
                                       "evaluate.galleries=false"]), run_dir)
    own_best = (run_dir / "eval" / "best.json").read_text()
    assert json.loads(own_best)["tta"] == "flip" and json.loads(own_best)["variant"] == ""
    evaluator(run_dir, "galleries=false")
    assert (run_dir / "eval" / "best.json").read_text() == own_best
    assert json.loads((run_dir / "eval" / "best.tta-none.json").read_text())["variant"] == "tta=none"
