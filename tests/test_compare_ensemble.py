"""An ensemble as an operand of `python -m runner.compare` (issue 26): `runner.compare STUDENT TEACHER_ENSEMBLE`.

evaluate_ensemble saves the ensemble's log-probabilities and labels beside its summary
(ensemble.val.pt beside ensemble.val.json); compare takes the summary or its folder as either
operand, and pairs it with a run on the very samples both were evaluated on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from runner.cli.evaluate import evaluate
from runner.evaluation.paired import mcnemar_exact
from runner.evaluation.predictions import load_predictions_file
from runner.run import train_and_evaluate
from tests.conftest import TINY, compose_config


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Runs a and b (another learning rate), the ensemble of both on val (its own folder) and on test."""
    root = tmp_path_factory.mktemp("ensemble_operand")
    base = [*TINY, "evaluate.after_training=true", "evaluate.galleries=false", "trainer.epochs=3"]
    for name, extra in {"a": [], "b": ["optimizer.lr=0.003"]}.items():
        train_and_evaluate(compose_config([*base, *extra]), root / name)
    for split in ("val", "test"):
        (root / f"ensemble_{split}").mkdir()
        with pytest.MonkeyPatch.context() as patch:  # the ensemble's outputs/ensembles/<time>/ lands there
            patch.chdir(root / f"ensemble_{split}")
            evaluate(compose_config([f"ensemble=[{root / 'a'},{root / 'b'}]", f"split={split}"],
                                    config_name="evaluate"))
    return root


def summary_of(root: Path, split: str = "val") -> Path:
    [found] = (root / f"ensemble_{split}" / "outputs" / "ensembles").glob(f"*/ensemble.{split}.json")
    return found


def compare_cli(*args: str) -> None:
    from runner.compare import cli

    cli([str(a) for a in args])


def test_the_ensemble_saves_its_log_probabilities_beside_its_summary(runs):
    summary = summary_of(runs)
    log_probs, labels = load_predictions_file(summary.with_name("ensemble.val.pt"), summary.parent)
    assert json.loads(summary.read_text())["predictions"] == "ensemble.val.pt"
    members = []
    for run in ("a", "b"):  # each run's best checkpoint
        best = json.loads((runs / run / "eval" / "best.json").read_text())["checkpoint"]
        members.append(torch.load(runs / run / "eval" / "predictions" / f"{Path(best).stem}.val.pt", weights_only=True))
    expected = torch.logsumexp(torch.stack([m["log_probabilities"] for m in members]), dim=0) - math.log(2)
    torch.testing.assert_close(log_probs, expected)
    assert torch.equal(labels, members[0]["labels"])
    top1 = float((log_probs.argmax(1) == labels).float().mean())
    assert json.loads(summary.read_text())["ensemble"]["top1"] == pytest.approx(top1)


def test_a_run_against_an_ensemble_folder_is_paired_on_the_same_samples(runs, tmp_path, capsys):
    summary = summary_of(runs)
    compare_cli(runs / "a", summary.parent, f"out={tmp_path}")
    printed = capsys.readouterr().out
    text = (tmp_path / "compare.md").read_text()
    assert text in printed and f"written: {tmp_path / 'compare.md'}" in printed
    members = ", ".join(m["member"] for m in json.loads(summary.read_text())["members"])
    assert f"- B: an ensemble of 2 members (tta=none): {members}" in text and "| setting | A | B |" not in text
    from runner.evaluation.comparison import best_predictions

    _, a_pred, labels = best_predictions(runs / "a")
    log_probs, _ = load_predictions_file(summary.with_name("ensemble.val.pt"), summary.parent)
    expected = mcnemar_exact(a_pred == labels, log_probs.argmax(1).numpy() == labels)
    assert f"only A right: {expected['only_a_right']}, only B right: {expected['only_b_right']}" in text
    assert "## Paired, on the same 14 val samples" in text and "at an ensemble of 2 members" in text
    assert (tmp_path / "curves.png").is_file() and (tmp_path / "disagreements.png").is_file()


def test_the_ensemble_summary_as_the_first_operand(runs, tmp_path):
    compare_cli(summary_of(runs), runs / "b", f"out={tmp_path}")
    text = (tmp_path / "compare.md").read_text()
    assert text.startswith("# b (B) against ensemble.val.json (A)") and "- A: an ensemble of 2 members" in text


def test_an_ensemble_on_another_split_is_refused_in_one_line(runs, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        compare_cli(runs / "a", summary_of(runs, "test"), f"out={tmp_path}")
    said = capsys.readouterr().err
    assert stopped.value.code == 2 and "were evaluated on different samples (val: 14, test: 14 samples" in said
    assert said.count("\n") == 1 and not (tmp_path / "compare.md").exists()


def test_an_ensemble_without_saved_predictions_is_refused_in_one_line(runs, tmp_path, capsys):
    older = tmp_path / "older"
    older.mkdir()
    summary = json.loads(summary_of(runs).read_text())
    del summary["predictions"]
    (older / "ensemble.val.json").write_text(json.dumps(summary))  # an evaluator before the .pt was saved
    with pytest.raises(SystemExit) as stopped:
        compare_cli(runs / "a", older, f"out={tmp_path / 'out'}")
    said = capsys.readouterr().err
    assert stopped.value.code == 2 and said.count("\n") == 1
    assert "has no saved predictions" in said and "Fix: python -m runner.evaluate 'ensemble=[" in said


def test_a_folder_of_two_ensemble_summaries_asks_which_in_one_line(runs, tmp_path, capsys):
    both = tmp_path / "both"
    both.mkdir()
    for split in ("val", "test"):  # two ensembles written in the same second share a folder
        summary = summary_of(runs, split)
        for path in (summary, summary.with_name(f"ensemble.{split}.pt")):
            (both / path.name).write_bytes(path.read_bytes())
    with pytest.raises(SystemExit) as stopped:
        compare_cli(runs / "a", both, f"out={tmp_path / 'out'}")
    said = capsys.readouterr().err
    assert stopped.value.code == 2 and said.count("\n") == 1
    assert "holds 2 ensemble summaries (ensemble.test.json, ensemble.val.json). Fix: give one of them" in said
    compare_cli(runs / "a", both / "ensemble.val.json", f"out={tmp_path / 'out'}")  # one of them: compared
    assert (tmp_path / "out" / "compare.md").is_file()
