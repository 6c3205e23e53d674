"""The evaluator evaluates every weights a checkpoint holds (issue 26): a `weights` column raw | ema | swa.

A checkpoint may hold `"averaged": {"ema": state_dict, "swa": state_dict}` beside `"model"`. Here
the averaged entries are written into a real tiny run's checkpoints by hand (the trainer's EMA/SWA
is another part): the trained weights as "ema" and zeros as the raw ones, so the ema rows are the
better ones and best.json, the runs table and the sweeper's objective must follow them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.optim.swa_utils import update_bn

from runner.cli.evaluate import evaluate
from runner.common import checkpoint_files
from runner.data import loaders
from runner.evaluation import averaged_weights, predictions, results
from runner.evaluation.run_table import formatted, table
from runner.evaluation.saved_splits import split_dataset, unaugmented_train_split
from runner.run import train_and_evaluate
from runner.sweep.objectives import values_of
from tests.conftest import TINY, compose_config

# a learnable miniature (the synthetic TINY data is noise to a linear model): 60 digits a split
DIGITS = ["dataset=digits", "dataset.subset=60", "model=linear", "trainer.epochs=3", "trainer.batch_size=12",
          "trainer.micro_batch_size=4", "optimizer.lr=0.05", "checkpoint.every_epochs=1",
          "evaluate.after_training=false"]
CHECKPOINTS = [f"checkpoints/epoch-000{epoch}.pt" for epoch in (1, 2, 3)]


def batch_norm_net(num_classes: int, in_channels: int, image_size) -> nn.Module:
    """A model with BatchNorm (runner's own models use GroupNorm): conv, BN, ReLU, pool, the classes."""
    return nn.Sequential(nn.Conv2d(in_channels, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, num_classes))


def give_averaged(run_dir: Path, make) -> None:
    """Rewrite each checkpoint with `make(raw_state) -> (new raw state, {"ema": ..., "swa": ...})`."""
    for name in CHECKPOINTS:
        path = run_dir / name
        state = torch.load(path, map_location="cpu", weights_only=True)
        state["model"], state["averaged"] = make(state["model"])
        checkpoint_files.save_atomic(state, path)


def zeros_raw_trained_ema(raw: dict) -> tuple[dict, dict]:
    return {k: torch.zeros_like(v) for k, v in raw.items()}, {"ema": {k: v.clone() for k, v in raw.items()}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished three-epoch linear run, not evaluated yet (run.json says finished: the sweeper reads it)."""
    run_dir = tmp_path_factory.mktemp("weights") / "run"
    train_and_evaluate(compose_config(DIGITS), run_dir)
    return run_dir


@pytest.fixture
def with_ema(trained, tmp_path) -> Path:
    run_dir = Path(shutil.copytree(trained, tmp_path / "run"))
    give_averaged(run_dir, zeros_raw_trained_ema)
    return run_dir


def evaluator(run_dir: Path, *overrides: str):
    return evaluate(compose_config([f"run_dir={run_dir}", *overrides], config_name="evaluate"))


def test_each_weights_a_checkpoint_holds_is_a_row_and_the_best_is_chosen_among_all(with_ema, capsys):
    best = evaluator(with_ema)
    printed = capsys.readouterr().out
    eval_dir = with_ema / "eval"
    rows = [json.loads(line) for line in (eval_dir / "metrics.jsonl").read_text().splitlines()]
    assert sorted((r["checkpoint"], r["weights"]) for r in rows) == sorted(
        (c, w) for c in CHECKPOINTS for w in ("raw", "ema"))
    raw = {r["checkpoint"]: r for r in rows if r["weights"] == "raw"}
    ema = {r["checkpoint"]: r for r in rows if r["weights"] == "ema"}
    assert all(r["loss"] == pytest.approx(torch.log(torch.tensor(10.0)).item()) for r in raw.values())  # zeros
    assert all(ema[c]["loss"] < raw[c]["loss"] for c in CHECKPOINTS)
    # the best among all rows: by top-1, a tie to the earlier checkpoint, raw before ema before swa
    expected = min(rows, key=lambda r: (-r["top1"], r["epoch"], ("raw", "ema", "swa").index(r["weights"])))
    assert expected["weights"] == "ema"
    written = json.loads((eval_dir / "best.json").read_text())
    assert (written["checkpoint"], written["weights"], written["value"]) == (
        expected["checkpoint"], "ema", expected["top1"])
    assert (best["checkpoint"], best["weights"]) == (expected["checkpoint"], "ema")
    # metrics.csv has the column; the printed table shows every row with its weights
    header, *lines = (eval_dir / "metrics.csv").read_text().splitlines()
    assert "weights" in header.split(",") and len(lines) == 6
    assert sum(" ema " in line for line in printed.splitlines()) == 3
    assert sum(" raw " in line for line in printed.splitlines()) == 3
    # predictions: raw under the old name, ema with the weights in it; the best's are those of its row
    names = sorted(p.name for p in (eval_dir / "predictions").iterdir())
    assert "epoch-0001.val.pt" in names and "epoch-0001.ema.val.pt" in names and len(names) == 6
    log_probs, _ = predictions.load_row_predictions(eval_dir, written)
    assert torch.equal(log_probs, torch.load(eval_dir / "predictions" /
                                             f"{Path(expected['checkpoint']).stem}.ema.val.pt")["log_probabilities"])
    # the runs table and the sweeper's objective follow the best row
    row = next(r for r in table(with_ema.parent) if r["run"] == "run")
    assert row["best"] == expected["top1"] and "ema" in row["checkpoint"]
    assert "ema" in formatted([row], "table")
    assert values_of(with_ema, ["top1", "loss"]) == [expected["top1"], expected["loss"]]
    # TensorBoard: the ema rows under their own tags
    events = EventAccumulator(str(with_ema / "tb"))
    events.Reload()
    assert [e.value for e in events.Scalars("eval/val/top1/ema")] == pytest.approx([ema[c]["top1"] for c in CHECKPOINTS])
    assert [e.value for e in events.Scalars("eval/val/top1")] == pytest.approx([raw[c]["top1"] for c in CHECKPOINTS])
    # nothing new the second time
    evaluator(with_ema)
    assert len((eval_dir / "metrics.jsonl").read_text().splitlines()) == 6


def test_weights_raw_evaluates_the_raw_weights_only_and_all_adds_the_rest_later(with_ema):
    evaluator(with_ema, "weights=raw")
    rows = results.read_rows(with_ema / "eval")
    assert {r["weights"] for r in rows} == {"raw"} and len(rows) == 3
    evaluator(with_ema)  # the default, weights=all: the ema rows now, the raw ones not again
    rows = results.read_rows(with_ema / "eval")
    assert sorted(r["weights"] for r in rows) == ["ema"] * 3 + ["raw"] * 3
    assert json.loads((with_ema / "eval" / "best.json").read_text())["weights"] == "ema"


def test_the_test_split_is_looked_at_with_the_best_weights_only(with_ema):
    evaluator(with_ema)
    row = evaluator(with_ema, "split=test")
    assert row["weights"] == "ema"
    test_rows = [r for r in results.read_rows(with_ema / "eval") if r["split"] == "test"]
    assert [r["weights"] for r in test_rows] == ["ema"]  # one look: the raw weights were not evaluated on test
    looks = [json.loads(line) for line in (with_ema / "eval" / "test_ledger.jsonl").read_text().splitlines()]
    assert [look["weights"] for look in looks] == ["ema"]


def test_a_test_split_ensemble_records_each_members_weights_in_the_ledger(with_ema):
    evaluate(compose_config([f"run_dir={with_ema}", "ensemble_top_k=2", "split=test"], config_name="evaluate"))
    test_rows = [r for r in results.read_rows(with_ema / "eval") if r["split"] == "test"]
    assert [r["weights"] for r in test_rows] == ["ema", "ema"]  # each member looked at with its best weights
    looks = [json.loads(line) for line in (with_ema / "eval" / "test_ledger.jsonl").read_text().splitlines()]
    assert [(look["checkpoint"], look.get("weights", "raw")) for look in looks] == [
        (r["checkpoint"], "ema") for r in test_rows]


def test_compares_validation_curve_follows_the_best_weights_only(with_ema, monkeypatch):
    """Raw and ema rows in one line would zigzag between them: the curve is that of the best's weights."""
    from runner.evaluation import comparison

    evaluator(with_ema)
    drawn = {}
    monkeypatch.setattr(comparison, "save_png", lambda figure, path: drawn.setdefault("figure", figure))
    monkeypatch.setattr(comparison, "training_losses", lambda run: ([], []))
    comparison.curves_png(with_ema, with_ema, with_ema / "curves.png")
    line = drawn["figure"].axes[1].lines[0]
    ema = sorted((r for r in results.read_rows(with_ema / "eval") if r["weights"] == "ema"), key=lambda r: r["epoch"])
    assert list(line.get_xdata()) == [1, 2, 3]
    assert list(line.get_ydata()) == [r["top1"] for r in ema]


def test_an_ensemble_member_uses_its_runs_best_weights(with_ema):
    result = evaluate(compose_config([f"run_dir={with_ema}", "ensemble_top_k=2"], config_name="evaluate"))
    rows = [r for r in results.read_rows(with_ema / "eval") if r["weights"] == "ema"]
    best_two = sorted(rows, key=lambda r: (-r["top1"], r["epoch"]))[:2]
    members = json.loads((with_ema / "eval" / "ensemble_top2.val.json").read_text())["members"]
    assert [m["top1"] for m in members] == [r["top1"] for r in best_two]
    assert result["n"] == best_two[0]["n"]


def test_an_older_metrics_jsonl_without_the_column_reads_as_raw(trained, tmp_path):
    run_dir = Path(shutil.copytree(trained, tmp_path / "run"))
    evaluator(run_dir)
    path = run_dir / "eval" / "metrics.jsonl"
    older = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        row.pop("weights"), row.pop("weights_held", None)
        older.append(json.dumps(row))
    path.write_text("\n".join(older) + "\n")
    best = json.loads((run_dir / "eval" / "best.json").read_text())
    best.pop("weights")
    best["metrics"].pop("weights")
    (run_dir / "eval" / "best.json").write_text(json.dumps(best))
    rows = results.read_rows(run_dir / "eval")
    assert len(rows) == 3 and {results.weights_of(r) for r in rows} == {"raw"}
    assert len(results.evaluated(run_dir / "eval")) == 3  # their predictions are found under the old names
    evaluator(run_dir)
    assert len(path.read_text().splitlines()) == 3  # nothing evaluated again
    assert values_of(run_dir, ["top1"]) == [best["value"]]
    assert predictions.load_row_predictions(run_dir / "eval", best)[0].shape[0] == best["metrics"]["n"]


def test_an_averaged_entry_that_does_not_fit_is_skipped_with_a_warning_and_the_raw_weights_evaluated(
        trained, tmp_path, caplog):
    run_dir = Path(shutil.copytree(trained, tmp_path / "run"))
    give_averaged(run_dir, lambda raw: (raw, {"ema": {"nonsense": torch.zeros(2)}}))
    evaluator(run_dir)
    rows = results.read_rows(run_dir / "eval")
    assert sorted(r["weights"] for r in rows) == ["raw"] * 3
    assert "ema weights" in caplog.text and "epoch-0001.pt" in caplog.text


# ---------------------------------------------------------------------------------------------
# swa: BatchNorm statistics recomputed over the training split, as torch.optim.swa_utils.update_bn


def train_split_without_augmentation(config: dict):
    return unaugmented_train_split(config, None)


def test_batch_norm_recompute_equals_update_bn_on_the_same_data():
    config = OmegaConf.to_container(compose_config([*TINY, "dataset.augment=basic"]), resolve=True)
    train = train_split_without_augmentation(config)
    val, _ = split_dataset(config, "val", None)
    assert len(train) == 30 and len(val) == 14
    torch.manual_seed(0)
    model = batch_norm_net(7, 3, [11, 13])
    reference = batch_norm_net(7, 3, [11, 13])
    reference.load_state_dict(model.state_dict())
    model.eval()
    said = averaged_weights.recompute_batch_norm(model, loaders.eval_loader(train, 4, 0, False), torch.device("cpu"))
    assert said and not any(m.training for m in model.modules())  # back in eval mode
    update_bn(loaders.eval_loader(train, 4, 0, False), reference)
    for (name, mine), (_, theirs) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(mine, theirs), name
    assert model[1].momentum == 0.1  # restored
    assert averaged_weights.recompute_batch_norm(nn.Linear(3, 2).eval(), [], torch.device("cpu")) is False


def test_the_swa_batch_norm_pass_sees_no_augmentation_of_any_kind():
    """dataset.auto_augment and random_erasing, not only dataset.augment, are off in the swa BatchNorm pass: the
    statistics are those of the same run without them."""
    from runner.evaluation.weights_evaluation import recompute_swa_statistics

    def statistics(*augmentation: str) -> dict:
        # digits: the per-sample ops work on pixels (synthetic's noise is refused with them)
        config = OmegaConf.to_container(compose_config(["dataset=digits", "dataset.subset=60", "dataset.augment=basic",
                                                        *augmentation]), resolve=True)
        torch.manual_seed(0)
        model = batch_norm_net(10, 1, [8, 8]).eval()
        settings = OmegaConf.create({"data_root": None})
        recompute_swa_statistics(model, config, settings, torch.device("cpu"), 0, "checkpoints/epoch-0001.pt")
        return model.state_dict()

    plain = statistics()
    augmented = statistics("dataset.auto_augment=trivial", "dataset.random_erasing=1.0")
    for name, value in plain.items():
        assert torch.equal(value, augmented[name]), name


def test_the_swa_weights_are_evaluated_with_their_batch_norm_recomputed(tmp_path, caplog):
    run_dir = tmp_path / "run"
    model = ["model=linear", "model._target_=tests.test_weights_rows.batch_norm_net"]
    train_and_evaluate(compose_config([*TINY, *model, "trainer.epochs=3", "dataset.augment=basic"]), run_dir)

    def scrambled_swa(raw: dict) -> tuple[dict, dict]:
        swa = {k: v.clone() for k, v in raw.items()}
        swa["1.running_mean"] += 5.0  # statistics that do not fit the weights: the recompute replaces them
        swa["1.running_var"] *= 9.0
        return raw, {"swa": swa}

    give_averaged(run_dir, scrambled_swa)
    caplog.set_level("INFO")
    evaluator(run_dir, "trust=[tests.test_weights_rows]")
    assert "BatchNorm statistics of the swa weights recomputed" in caplog.text
    rows = results.read_rows(run_dir / "eval")
    assert sorted(r["weights"] for r in rows) == ["raw"] * 3 + ["swa"] * 3
    # the reference: update_bn over the training split without augmentation, then the val split in eval mode
    state = torch.load(run_dir / CHECKPOINTS[0], weights_only=True)
    config = state["config"]
    reference = batch_norm_net(7, 3, [11, 13])
    reference.load_state_dict(state["averaged"]["swa"])
    update_bn(loaders.eval_loader(train_split_without_augmentation(config), 4, 0, False), reference)
    reference.eval()
    val, _ = split_dataset(config, "val", None)
    with torch.no_grad():
        expected = torch.cat([reference(x).log_softmax(dim=1) for x, _ in loaders.eval_loader(val, 4, 0, False)])
    saved = torch.load(run_dir / "eval" / "predictions" / "epoch-0001.swa.val.pt")["log_probabilities"]
    assert torch.equal(saved, expected)


def test_a_bad_weights_setting_is_refused_in_one_line(capsys):
    from runner.config.schema import validate_evaluate_command
    from tests.conftest import refused_in_one_line

    line = refused_in_one_line(["run_dir=x", "weights=average"], capsys, "evaluate", validate_evaluate_command)
    assert "weights='average'" in line and "Fix: weights=all|raw|ema|swa" in line


def test_early_stopping_counts_each_checkpoint_by_its_best_weights():
    from omegaconf import OmegaConf

    from runner.evaluation.early_stopping import stop_reason

    def row(epoch: int, weights: str, top1: float) -> dict:
        return {"checkpoint": f"checkpoints/epoch-000{epoch}.pt", "epoch": epoch, "split": "val", "tta": "none",
                "weights": weights, "variant": "", "top1": top1}

    settings = OmegaConf.create({"tta": "none", "metric": "top1", "direction": "auto"})
    raw_falls_ema_rises = [row(1, "raw", 0.5), row(1, "ema", 0.4), row(2, "raw", 0.45), row(2, "ema", 0.55),
                           row(3, "raw", 0.44), row(3, "ema", 0.6)]
    assert stop_reason(raw_falls_ema_rises, settings, patience=2, min_delta=0.0) is None  # ema improves
    both_fall = [row(1, "raw", 0.5), row(1, "ema", 0.6), row(2, "raw", 0.45), row(2, "ema", 0.55),
                 row(3, "raw", 0.44), row(3, "ema", 0.58)]
    said = stop_reason(both_fall, settings, patience=2, min_delta=0.0)
    assert said is not None and "not improved on 0.6000 (epoch 1) for 2 checkpoints" in said


def test_tta_flip_is_compared_with_the_same_weights_without_it(caplog):
    from runner.evaluation.tables import warn_if_flipping_hurts

    def row(weights: str, tta: str, top1: float) -> dict:
        return {"checkpoint": "checkpoints/epoch-0001.pt", "epoch": 1, "split": "val", "weights": weights,
                "tta": tta, "top1": top1}

    # the ema weights are worse than the raw ones, and flipping helps both: no warning
    warn_if_flipping_hurts([row("ema", "none", 0.5), row("raw", "none", 0.9), row("raw", "flip", 0.95),
                            row("ema", "flip", 0.55)], "val")
    assert "lowers top-1" not in caplog.text
    warn_if_flipping_hurts([row("ema", "none", 0.5), row("ema", "flip", 0.45)], "val")
    assert "lowers top-1 of checkpoints/epoch-0001.pt from 50.00% to 45.00%" in caplog.text


# ---------------------------------------------------------------------------------------------
# what an adversarial tester found (issue 26): ensembles, compare and tables of one weights


def trained_raw_at_first_only(run_dir: Path) -> None:
    """Raw weights trained at epoch 1 and zeros after, ema the trained weights throughout: the best raw checkpoint
    (epoch 1) is not the checkpoint of the run's best (an ema row of a later epoch)."""
    for name in CHECKPOINTS:
        path = run_dir / name
        state = torch.load(path, map_location="cpu", weights_only=True)
        trained_weights = {k: v.clone() for k, v in state["model"].items()}
        if name != CHECKPOINTS[0]:
            state["model"] = {k: torch.zeros_like(v) for k, v in state["model"].items()}
        state["averaged"] = {"ema": trained_weights}
        checkpoint_files.save_atomic(state, path)


@pytest.fixture
def two_mixed(trained, tmp_path) -> tuple[Path, Path]:
    runs = []
    for name in ("a", "b"):
        run_dir = Path(shutil.copytree(trained, tmp_path / name))
        trained_raw_at_first_only(run_dir)
        evaluator(run_dir)
        runs.append(run_dir)
    best = json.loads((runs[0] / "eval" / "best.json").read_text())
    assert best["weights"] == "ema" and best["checkpoint"] != CHECKPOINTS[0], best  # the premise
    return runs[0], runs[1]


def test_an_ensemble_with_a_tta_is_written_beside_the_plain_one_not_over_it(with_ema, tmp_path, capsys):
    evaluate(compose_config([f"run_dir={with_ema}", "ensemble_top_k=2", "tta=translate"], config_name="evaluate"))
    assert "ensemble on the val split (tta=translate):" in capsys.readouterr().out
    evaluate(compose_config([f"run_dir={with_ema}", "ensemble_top_k=2"], config_name="evaluate"))
    assert "ensemble on the val split:" in capsys.readouterr().out
    eval_dir = with_ema / "eval"
    translated = eval_dir / "ensemble_top2.val.tta-translate.json"
    plain = eval_dir / "ensemble_top2.val.json"
    assert json.loads(translated.read_text())["tta"] == "translate"
    assert json.loads(translated.read_text())["predictions"] == "ensemble_top2.val.tta-translate.pt"
    assert (eval_dir / "ensemble_top2.val.tta-translate.pt").is_file()
    assert json.loads(plain.read_text())["tta"] == "none"
    from runner.compare import cli  # compare still reads either summary

    cli([str(with_ema), str(translated), f"out={tmp_path / 'compare'}"])
    assert "an ensemble of 2 members (tta=translate)" in (tmp_path / "compare" / "compare.md").read_text()


def test_an_ensemble_of_asked_weights_takes_each_members_best_checkpoint_of_those_weights(two_mixed, tmp_path,
                                                                                        monkeypatch, capsys):
    a, b = two_mixed
    monkeypatch.chdir(tmp_path)
    evaluate(compose_config([f"ensemble=[{a},{b}]", "weights=raw"], config_name="evaluate"))
    [summary] = (tmp_path / "outputs" / "ensembles").glob("*/ensemble.val.json")
    members = json.loads(summary.read_text())["members"]
    assert [(m["member"], m["weights"]) for m in members] == [(f"{run.name}/{CHECKPOINTS[0]}", "raw") for run in (a, b)]
    printed = capsys.readouterr().out
    assert f"{a.name}/{CHECKPOINTS[0]} " in printed and "(raw)" not in printed
    shutil.rmtree(tmp_path / "outputs")
    evaluate(compose_config([f"ensemble=[{a},{b}]", "weights=ema"], config_name="evaluate"))
    [summary] = (tmp_path / "outputs" / "ensembles").glob("*/ensemble.val.json")
    best = json.loads((a / "eval" / "best.json").read_text())["checkpoint"]
    members = json.loads(summary.read_text())["members"]
    assert [(m["member"], m["weights"]) for m in members] == [(f"{run.name}/{best} (ema)", "ema") for run in (a, b)]
    assert f"{a.name}/{best} (ema)" in capsys.readouterr().out
    from runner.compare import cli

    cli([str(a), str(summary.parent), f"out={tmp_path / 'compare'}"])
    assert f"an ensemble of 2 members (tta=none): {a.name}/{best} (ema), {b.name}/{best} (ema)" in (
        tmp_path / "compare" / "compare.md").read_text()
    # a run's top-K of the raw weights: its two best raw checkpoints (zeros tie: the earlier)
    evaluate(compose_config([f"run_dir={a}", "ensemble_top_k=2", "weights=raw"], config_name="evaluate"))
    members = json.loads((a / "eval" / "ensemble_top2.raw.val.json").read_text())["members"]  # not over all's
    assert [(m["member"], m["weights"]) for m in members] == [(f"a/{c}", "raw") for c in CHECKPOINTS[:2]]


@pytest.mark.parametrize("evaluated_before", [True, False])
def test_weights_a_run_does_not_hold_are_refused_in_one_line_naming_the_cause(with_ema, evaluated_before):
    from runner.common.errors import UserError

    if evaluated_before:
        evaluator(with_ema)
    expected = (f"no checkpoint of {with_ema} holds swa weights (they hold raw, ema). Fix: weights=all, or train "
                "with trainer.swa.start_epoch=K")
    with pytest.raises(UserError) as refused:
        evaluator(with_ema, "weights=swa")
    assert str(refused.value) == expected
    with pytest.raises(UserError) as refused:  # an ensemble member: the same cause, not "could not be evaluated"
        evaluate(compose_config([f"ensemble=[{with_ema},{with_ema}]", "weights=swa"], config_name="evaluate"))
    assert str(refused.value) == expected


def test_compare_says_which_weights_each_best_is_and_reads_a_checkpoints_best_row(with_ema, tmp_path):
    from runner.compare import cli
    from runner.evaluation.comparison import best_predictions

    evaluator(with_ema)
    best = json.loads((with_ema / "eval" / "best.json").read_text())
    cli([str(with_ema), str(with_ema), f"out={tmp_path / 'runs'}"])
    assert f"at {best['checkpoint']} (ema)" in (tmp_path / "runs" / "compare.md").read_text()
    first, second = (with_ema / c for c in CHECKPOINTS[:2])
    cli([str(first), str(second), f"out={tmp_path / 'checkpoints'}"])
    text = (tmp_path / "checkpoints" / "compare.md").read_text()
    ema = {r["checkpoint"]: r for r in results.read_rows(with_ema / "eval") if r["weights"] == "ema"}
    assert f"- A: {ema[CHECKPOINTS[0]]['top1']:.4f}" in text and f"at {CHECKPOINTS[0]} (ema)" in text
    chosen, predicted, _ = best_predictions(first)
    assert chosen["weights"] == "ema"
    saved = torch.load(with_ema / "eval" / "predictions" / "epoch-0001.ema.val.pt", weights_only=True)
    assert (predicted == saved["log_probabilities"].argmax(1).numpy()).all()


def test_the_runs_tables_other_column_says_the_weights_of_a_variants_best(with_ema):
    evaluator(with_ema, "tta=translate")
    best = json.loads((with_ema / "eval" / "best.tta-translate.json").read_text())
    shown = next(r for r in table(with_ema.parent) if r["run"] == "run")["other"]
    assert f"tta=translate: top1 {best['value']:.4f} (epoch {best['epoch']}, ema)" == shown


def test_the_training_jobs_closing_summary_says_the_weights(capsys):
    from runner.training.job import print_summary

    print_summary(Path("run"), {"checkpoint": "checkpoints/epoch-0003.pt", "weights": "ema", "top1": 0.9721}, "top1")
    print_summary(Path("run"), {"checkpoint": "checkpoints/epoch-0002.pt", "weights": "raw", "top1": 0.9387}, "top1")
    printed = capsys.readouterr().out
    assert "best:          checkpoints/epoch-0003.pt (ema; top1 0.9721 on val)" in printed
    assert "best:          checkpoints/epoch-0002.pt (top1 0.9387 on val)" in printed


def test_a_table_of_one_weights_marks_its_best_and_names_the_runs_best_not_shown(with_ema, capsys):
    evaluator(with_ema)
    capsys.readouterr()
    evaluator(with_ema, "weights=raw")
    printed = capsys.readouterr().out
    best = json.loads((with_ema / "eval" / "best.json").read_text())
    assert f"(the run's best is {Path(best['checkpoint']).stem} ema, not shown)" in printed
    marked = [line for line in printed.splitlines() if line.startswith("* ")]
    assert len(marked) == 1 and CHECKPOINTS[0] in marked[0]  # zeros tie: the earliest raw row


def test_a_ledger_look_without_weights_reads_as_raw_and_a_raw_look_omits_them(tmp_path, caplog):
    eval_dir = tmp_path / "run" / "eval"
    eval_dir.mkdir(parents=True)
    ledger = eval_dir / "test_ledger.jsonl"
    ledger.write_text(json.dumps({"time": "then", "checkpoint": CHECKPOINTS[0], "tta": "none", "top1": 0.5}) + "\n")
    results.record_test_look(eval_dir, CHECKPOINTS[1], "none", 0.6)  # an older look (no weights key): raw
    assert f"(first then, {CHECKPOINTS[0]}):" in caplog.text
    results.record_test_look(eval_dir, CHECKPOINTS[2], "none", 0.7, weights="ema")
    looks = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert ["weights" in look for look in looks] == [False, False, True] and looks[2]["weights"] == "ema"
    ledger.write_text(json.dumps(looks[2]) + "\n")
    caplog.clear()
    results.record_test_look(eval_dir, CHECKPOINTS[0], "none", 0.5)
    assert f"(first {looks[2]['time']}, {CHECKPOINTS[2]} (ema)):" in caplog.text


def test_the_command_that_evaluates_a_top_k_ensemble_again_keeps_its_weights_and_tta(with_ema, tmp_path, capsys):
    from runner.compare import cli

    evaluator(with_ema)  # the run's best.json: compare's other operand
    evaluate(compose_config([f"run_dir={with_ema}", "ensemble_top_k=2", "weights=ema", "tta=translate"],
                            config_name="evaluate"))
    summary = with_ema / "eval" / "ensemble_top2.ema.val.tta-translate.json"
    (with_ema / "eval" / "ensemble_top2.ema.val.tta-translate.pt").unlink()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli([str(with_ema), str(summary), f"out={tmp_path}"])
    assert "ensemble_top_k=2 split=val tta=translate weights=ema" in capsys.readouterr().err
