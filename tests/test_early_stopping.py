"""trainer.early_stopping and evaluate.during_training: validation while training, still offline."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from runner.evaluation import results
from runner.evaluation.early_stopping import checkpoints_since_best, stop_reason
from runner.run import train_and_evaluate as train_job
from tests.conftest import TINY, compose_config, run_cli


@pytest.mark.parametrize(("values", "higher", "min_delta", "since"), [
    ([0.5, 0.6, 0.7], True, 0.0, 0),
    ([0.5, 0.7, 0.6, 0.7, 0.65], True, 0.0, 3),  # equal to the best is no improvement
    ([0.5, 0.7, 0.705, 0.71], True, 0.01, 2),  # 0.71 beats 0.7 by exactly 0.01: not more than min_delta
    ([2.0, 1.5, 1.6, 1.4], False, 0.0, 0),  # a loss: lower is better
    ([2.0, 1.5, 1.6, 1.55], False, 0.0, 2),
])
def test_checkpoints_since_the_best(values, higher, min_delta, since):
    assert checkpoints_since_best(values, higher, min_delta) == since


def rows_of(values: list[float], metric: str = "top1") -> list[dict]:
    return [{"checkpoint": f"checkpoints/epoch-000{e}.pt", "epoch": e, "split": "val", "tta": "none", metric: v}
            for e, v in enumerate(values, start=1)]


def test_the_reason_names_the_best_and_what_came_after():
    settings = OmegaConf.create({"metric": "top1", "direction": "auto", "tta": "none"})
    assert stop_reason(rows_of([0.5, 0.8, 0.7]), settings, patience=2, min_delta=0.0) is None
    said = stop_reason(rows_of([0.5, 0.8, 0.7, 0.75]), settings, patience=2, min_delta=0.0)
    assert said == ("val top1 has not improved on 0.8000 (epoch 2) for 2 checkpoints: 0.7000 (epoch 3), "
                    "0.7500 (epoch 4) (trainer.early_stopping.patience=2)")


def test_training_stops_on_a_constructed_metric_sequence_and_a_rerun_stays_stopped(tmp_path, monkeypatch, caplog):
    import runner.evaluation.evaluator as evaluator

    sequence = [0.3, 0.5, 0.45, 0.5, 0.4, 0.9, 0.9, 0.9]  # no improvement after epoch 2 for 3 checkpoints: stop at 5

    def constructed(run_dir, settings, path):
        epoch = int(path.stem.split("-")[1])
        eval_dir = results.eval_dir_of(run_dir)
        if not any(r["epoch"] == epoch for r in results.read_rows(eval_dir)):
            results.append_row(eval_dir, {**rows_of(sequence)[epoch - 1], "checkpoint": f"checkpoints/{path.name}"})

    monkeypatch.setattr(evaluator, "evaluate_one", constructed)
    cfg = compose_config([*TINY, "trainer.epochs=8", "trainer.early_stopping.patience=3"])
    with caplog.at_level("INFO"):
        result = train_job(cfg, tmp_path / "run")
    assert result["train"]["epoch"] == 5 and result["train"]["stopped_early"]
    assert "early stopping after epoch 5 of 8: val top1 has not improved on 0.5000 (epoch 2) for 3 checkpoints" \
        in caplog.text
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("epoch-*.pt"))[-1] == "epoch-0005.pt"
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "finished"
    again = train_job(cfg, tmp_path / "run")  # the same command again: it stopped early, it stays stopped
    assert again["train"] == {"epoch": 5, "finished": True, "stopped_early": True}


@pytest.mark.slow
def test_an_evaluator_process_follows_the_run_while_it_trains(tmp_path):
    run_dir = tmp_path / "run"
    # no evaluation after training: every row comes from the process that followed the run
    result = run_cli([*TINY, "trainer.epochs=4", "evaluate.during_training=true", "evaluate.after_training=false",
                      f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "an evaluator follows this run" in result.stdout
    evaluated = [r["epoch"] for r in results.read_rows(run_dir / "eval")]
    assert sorted(evaluated) == [1, 2, 3, 4], evaluated  # each checkpoint once
    assert (run_dir / "eval" / "best.json").is_file()
    assert any(p.name.endswith(".eval") for p in (run_dir / "tb").iterdir())  # its curves, in the run's TensorBoard
