"""python -m runner.compare: the config difference, and a paired test that says whether B is better."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from runner.evaluation.paired import bootstrap_difference, mcnemar_exact, per_class_deltas


def test_mcnemar_against_a_hand_computation():
    a = np.array([1] * 15 + [0] * 5, dtype=bool)
    b = a.copy()
    b[0] = False  # A alone right on 1 sample
    b[15:19] = True  # B alone right on 4
    result = mcnemar_exact(a, b)
    assert (result["only_a_right"], result["only_b_right"]) == (1, 4)
    assert result["p_value"] == pytest.approx(2 * (math.comb(5, 0) + math.comb(5, 1)) / 2**5)  # 0.375
    assert mcnemar_exact(a, a)["p_value"] == 1.0  # no disagreement: no evidence either way


def test_the_paired_bootstrap_equals_a_plain_loop():
    rng = np.random.default_rng(3)
    a, b = rng.random(50) < 0.7, rng.random(50) < 0.8
    result = bootstrap_difference(a, b, resamples=2000, seed=7)
    draws = np.random.default_rng(7).integers(0, 50, size=(2000, 50))
    means = []
    for row in draws:  # the reference: one resample at a time
        means.append(sum(float(b[i]) - float(a[i]) for i in row) / 50)
    assert result["difference"] == pytest.approx(float(b.mean() - a.mean()))
    assert result["ci95"] == pytest.approx(list(np.percentile(means, [2.5, 97.5])))


def test_per_class_deltas_largest_first():
    labels = np.array([0, 0, 1, 1, 2, 2])
    a = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    b = np.array([1, 1, 1, 1, 1, 1], dtype=bool)
    rows = per_class_deltas(a, b, labels, ["cat", "dog", "eel"])
    assert [r["class"] for r in rows] == ["dog", "eel", "cat"] and rows[0]["delta"] == 1.0


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory) -> Path:
    """Tiny runs: A, B (one setting changed), C (two changed), D (other validation samples)."""
    from runner.run import train_and_evaluate
    from tests.conftest import TINY, compose_config

    root = tmp_path_factory.mktemp("runs")
    base = [*TINY, "evaluate.after_training=true", "evaluate.galleries=false", "trainer.epochs=3"]
    for name, extra in {"a": [], "b": ["optimizer.lr=0.003"], "c": ["optimizer.lr=0.003", "model.hidden=64"],
                        "d": ["dataset.val_size=20"]}.items():
        train_and_evaluate(compose_config([*base, *extra]), root / "sweep" / name)
    return root


def compare_md(*args: str) -> str:
    from runner.compare import cli

    out = Path(args[-1].split("=", 1)[1])
    cli(list(args))
    return (out / "compare.md").read_text()


def test_one_setting_changed_is_named_and_the_paired_test_comes_from_the_saved_predictions(three_runs, tmp_path):
    text = compare_md(str(three_runs / "sweep/a"), str(three_runs / "sweep/b"), f"out={tmp_path}")
    assert "| optimizer.lr | 0.0003 | 0.003 |" in text and "change one thing at a time" not in text
    from runner.evaluation.comparison import best_predictions

    _, a_pred, labels = best_predictions(three_runs / "sweep/a")
    _, b_pred, _ = best_predictions(three_runs / "sweep/b")
    expected = mcnemar_exact(a_pred == labels, b_pred == labels)
    assert f"only A right: {expected['only_a_right']}, only B right: {expected['only_b_right']}" in text
    assert (tmp_path / "curves.png").stat().st_size > 10_000 and (tmp_path / "disagreements.png").is_file()


def test_two_settings_changed_get_the_warning(three_runs, tmp_path):
    text = compare_md(str(three_runs / "sweep/a"), str(three_runs / "sweep/c"), f"out={tmp_path}")
    assert "**2 settings changed: change one thing at a time**" in text and "| model.hidden |" in text


def test_runs_evaluated_on_other_samples_are_refused(three_runs, tmp_path, capsys):
    from runner.compare import cli

    with pytest.raises(SystemExit) as stopped:
        cli([str(three_runs / "sweep/a"), str(three_runs / "sweep/d"), f"out={tmp_path}"])
    said = capsys.readouterr().err
    assert stopped.value.code == 2 and "were evaluated on different samples (val: 14, val: 20 samples" in said
    assert said.count("\n") == 1 and not (tmp_path / "compare.md").exists()


def test_a_sweep_folder_compares_its_best_trial_with_the_runner_up(three_runs, tmp_path):
    from runner.evaluation.comparison import trials_of

    values = {run: json.loads((three_runs / "sweep" / run / "eval/best.json").read_text())["value"] for run in "abcd"}
    runner_up, best = trials_of(three_runs / "sweep")
    others = [v for run, v in values.items() if run not in (best.name, runner_up.name)]
    assert values[best.name] >= values[runner_up.name] >= max(others)  # top1: higher is better


def test_two_checkpoints_of_one_run(three_runs, tmp_path):
    run = three_runs / "sweep/b"
    text = compare_md(str(run / "checkpoints/epoch-0001.pt"), str(run / "checkpoints/epoch-0003.pt"), f"out={tmp_path}")
    assert "# epoch-0003.pt (B) against epoch-0001.pt (A)" in text and "## What differs" in text
    assert "at checkpoints/epoch-0001.pt" in text and "at checkpoints/epoch-0003.pt" in text


def test_curves_have_whole_number_axes_and_a_lone_point_is_a_marker(tmp_path, monkeypatch):
    from runner.evaluation import comparison

    run = tmp_path / "one-epoch"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "metrics.jsonl").write_text(json.dumps(
        {"checkpoint": "checkpoints/epoch-0001.pt", "epoch": 1, "split": "val", "tta": "none", "top1": 0.4}) + "\n")
    drawn = {}
    monkeypatch.setattr(comparison, "save_png", lambda figure, path: drawn.setdefault("figure", figure))
    monkeypatch.setattr(comparison, "training_losses", lambda run: ([7], [1.25]))
    comparison.curves_png(run, run, tmp_path / "curves.png")
    train, val = drawn["figure"].axes
    assert train.lines[0].get_marker() == "o" and val.lines[0].get_marker() == "o"  # one point: seen
    for axes in (train, val):
        drawn["figure"].canvas.draw()
        ticks = [t for t in axes.get_xticks() if axes.get_xlim()[0] <= t <= axes.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_disagreements_name_the_true_class_and_both_predictions(three_runs, tmp_path, monkeypatch):
    from runner.evaluation import comparison

    drawn = {}
    monkeypatch.setattr(comparison, "save_png", lambda figure, path: drawn.setdefault("figure", figure))
    result = comparison.compare(three_runs / "sweep/a", three_runs / "sweep/b")
    index = result["only_a"][0] if result["only_a"] else 3
    result["only_a"] = [index]  # the tiny runs may agree everywhere: draw one sample as if only A got it right
    assert comparison.disagreements_png(result, tmp_path / "disagreements.png")
    titles = [axis.get_title() for axis in drawn["figure"].axes if axis.get_title()]
    label, a, b = (int(result[k][index]) for k in ("labels", "predicted_a", "predicted_b"))
    assert f"#{index}\ntrue: {label}\nA: {a}  B: {b}" in titles  # synthetic data: no files, no class names


def test_samples_are_named_by_their_files_where_the_dataset_reads_files():
    from torch.utils.data import Subset

    from runner.evaluation.comparison import sample_names

    class Folder:  # torchvision's ImageFolder keeps (path, class) pairs
        samples = [("/data/roses/a.jpg", 0), ("/data/tulips/b.jpg", 1), ("/data/roses/c.jpg", 0)]
    assert sample_names(Subset(Folder(), [2, 0]), 2) == ["c.jpg", "a.jpg"]
    assert sample_names(object(), 2) == ["#0", "#1"]


def test_settings_that_only_observe_are_no_setting_changed(tmp_path):
    from runner.evaluation.run_differences import config_difference

    for name, every in (("a", None), ("b", 100)):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        config = {"optimizer": {"lr": 0.1}, "checkpoint": {"every_updates": every, "keep_updates": every},
                  "trainer": {"log_histograms_every": every}, "logger": {"mlflow": {"experiment": name}},
                  "evaluate": {"during_training": every is not None}}
        (tmp_path / name / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    assert config_difference(tmp_path / "a", tmp_path / "b") == []
