"""The offline evaluator against a plain reference, its files, its modes, and its refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from runner import models
from runner.cli.evaluate import evaluate
from runner.common import checkpoint_files
from runner.common.errors import UserError
from runner.data import datasets, loaders
from runner.evaluation import metrics, results
from runner.evaluation.evaluator import evaluate_run
from runner.evaluation.inference import assert_eval_mode, predict
from runner.evaluation.predictions import load_row_predictions
from runner.evaluation.results import read_rows
from runner.run import train_and_evaluate as train_job
from tests.conftest import TINY, cli_env, compose_config


def settings(*overrides):
    return compose_config(list(overrides), config_name="evaluate")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished 3-epoch run with a checkpoint every epoch, not yet evaluated."""
    run_dir = tmp_path_factory.mktemp("eval") / "run"
    train_job(compose_config([*TINY, "trainer.epochs=3", "model.dropout=0.2"]), run_dir)
    return run_dir


def fresh_copy(run_dir: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("eval"))
    return copy


def reference_metrics(path: Path, split: str) -> dict:
    """Deliberately simple: one sample at a time through the model, plain Python counting."""
    state = checkpoint_files.load(path)
    config = OmegaConf.create(state["config"])
    model = models.build(config.model)
    model.load_state_dict(state["model"])
    model.eval()
    dataset = datasets.build_splits(config.dataset)[split]
    total_loss, correct = 0.0, 0
    hits, counts = [0] * config.dataset.num_classes, [0] * config.dataset.num_classes
    with torch.no_grad():
        for i in range(len(dataset)):
            x, y = dataset[i]
            logits = model(x.unsqueeze(0))[0]
            total_loss += float(torch.nn.functional.cross_entropy(logits.unsqueeze(0), torch.tensor([int(y)])))
            counts[int(y)] += 1
            if int(logits.argmax()) == int(y):
                correct += 1
                hits[int(y)] += 1
    return {"loss": total_loss / len(dataset), "top1": correct / len(dataset),
            "per_class_accuracy": [h / c if c else None for h, c in zip(hits, counts, strict=True)],
            "n": len(dataset)}


def test_metrics_equal_a_plain_per_sample_loop(trained, tmp_path):
    run_dir = fresh_copy(trained, tmp_path)
    evaluate_run(run_dir, settings("batch_size=5"))  # 14 validation samples: the last batch has 4
    rows = read_rows(run_dir / "eval")
    assert [r["checkpoint"] for r in rows] == [f"checkpoints/epoch-000{e}.pt" for e in (1, 2, 3)]
    for row in rows:
        expected = reference_metrics(run_dir / row["checkpoint"], "val")
        assert row["n"] == expected["n"] == 14  # every sample exactly once
        assert row["top1"] == pytest.approx(expected["top1"])
        assert row["loss"] == pytest.approx(expected["loss"], rel=1e-5)
        assert row["per_class_accuracy"] == pytest.approx(expected["per_class_accuracy"])


def bn_dropout_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Dropout(0.5),
        torch.nn.Flatten(), torch.nn.Linear(4 * 9 * 11, 7))
    model.train()
    for _ in range(3):  # give BatchNorm running statistics that differ from any one batch's
        model(torch.randn(16, 3, 11, 13) * 3 + 1)
    return model


def test_eval_mode_gives_the_same_predictions_for_any_batch_size():
    model = bn_dropout_model().eval()
    dataset = torch.utils.data.TensorDataset(torch.randn(23, 3, 11, 13), torch.randint(0, 7, (23,)))
    results = [predict(model, loaders.eval_loader(dataset, b, 0, False), torch.device("cpu"), None, "none")[0]
               for b in (1, 5, 23)]
    for other in results[1:]:
        torch.testing.assert_close(results[0], other, rtol=1e-5, atol=1e-5)


def test_a_model_left_in_training_mode_is_caught():
    model = bn_dropout_model()  # in training mode: dropout and batch statistics
    x = torch.randn(8, 3, 11, 13)
    assert not torch.allclose(model(x)[:4], model(x[:4]))  # what the check protects against
    dataset = torch.utils.data.TensorDataset(x, torch.zeros(8, dtype=torch.long))
    with pytest.raises(RuntimeError, match="training mode"):
        predict(model, loaders.eval_loader(dataset, 4, 0, False), torch.device("cpu"), None, "none")


def test_a_model_whose_eval_does_nothing_is_caught(monkeypatch):
    """The check of the check: a planted no-op eval() is refused, not silently evaluated."""
    model = bn_dropout_model()
    monkeypatch.setattr(torch.nn.Module, "eval", lambda self: self)
    with pytest.raises(RuntimeError, match="training mode"):
        assert_eval_mode(model.eval())


def test_rerun_evaluates_nothing_new_and_prints_the_same_table(trained, tmp_path, capsys):
    run_dir = fresh_copy(trained, tmp_path)
    evaluate_run(run_dir, settings())
    first = capsys.readouterr().out
    rows = read_rows(run_dir / "eval")
    evaluate_run(run_dir, settings())
    assert capsys.readouterr().out == first
    assert read_rows(run_dir / "eval") == rows
    assert sum(line.startswith("* checkpoints/") for line in first.splitlines()) == 1  # the best, marked


def test_best_json_figures_and_tensorboard_steps(trained, tmp_path):
    run_dir = fresh_copy(trained, tmp_path)
    best = evaluate_run(run_dir, settings("metric=loss"))
    rows = read_rows(run_dir / "eval")
    assert best["loss"] == min(r["loss"] for r in rows)
    record = json.loads((run_dir / "eval" / "best.json").read_text())
    assert record["checkpoint"] == best["checkpoint"] and record["direction"] == "min"
    for name in ("confusion_matrix.png", "confusion_matrix.csv", "metrics.csv", "gallery_min.png",
                 "gallery_q25.png", "gallery_median.png", "gallery_q75.png", "gallery_max.png"):
        assert (run_dir / "eval" / name).is_file(), name
    counts = (run_dir / "eval" / "confusion_matrix.csv").read_text().splitlines()
    assert sum(sum(map(int, line.split(",")[1:])) for line in counts[1:]) == 14
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    steps = [e.step for e in events.Scalars("eval/val/top1")]
    assert steps == [r["global_step"] for r in rows] == [3, 6, 9]
    assert [e.value for e in events.Scalars("eval/val/top1")] == pytest.approx([r["top1"] for r in rows])


def test_the_test_split_is_looked_at_once_and_the_second_look_warns(trained, tmp_path, caplog):
    run_dir = fresh_copy(trained, tmp_path)
    row = evaluate(settings(f"run_dir={run_dir}", "split=test"))
    val_rows = [r for r in read_rows(run_dir / "eval") if r["split"] == "val"]
    assert len(val_rows) == 3 and row["split"] == "test"
    assert row["checkpoint"] == max(val_rows, key=lambda r: (r["top1"], -r["epoch"]))["checkpoint"]
    assert "looked at" not in caplog.text
    evaluate(settings(f"run_dir={run_dir}", "split=test"))
    assert "has been looked at 1 time(s) before" in caplog.text
    ledger = (run_dir / "eval" / "test_ledger.jsonl").read_text().splitlines()
    assert len(ledger) == 2
    # a look at the test split is one point: a line of text in TensorBoard, not a chart of one dot a metric
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    assert not [tag for tag in events.Tags()["scalars"] if tag.startswith("eval/test")]
    assert "eval/val/top1" in events.Tags()["scalars"]
    text = events.Tensors("eval/test/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert f"top1 {row['top1']:.4f}" in text and row["checkpoint"] in text


def test_corrupt_and_partial_checkpoints_are_skipped_and_retried(trained, tmp_path, caplog):
    run_dir = fresh_copy(trained, tmp_path)
    good = (run_dir / "checkpoints" / "epoch-0002.pt").read_bytes()
    (run_dir / "checkpoints" / "epoch-0002.pt").write_bytes(good[: len(good) // 2])
    (run_dir / "checkpoints" / ".epoch-0004.pt.tmp-99").write_bytes(b"being written")
    evaluate_run(run_dir, settings())
    assert "epoch-0002.pt is truncated" in caplog.text
    assert [r["epoch"] for r in read_rows(run_dir / "eval")] == [1, 3]
    (run_dir / "checkpoints" / "epoch-0002.pt").write_bytes(good)  # now complete: evaluated next time
    evaluate_run(run_dir, settings())
    assert sorted(r["epoch"] for r in read_rows(run_dir / "eval")) == [1, 2, 3]


def test_a_single_checkpoint_file(trained, tmp_path, capsys):
    run_dir = fresh_copy(trained, tmp_path)
    evaluate(settings(f"run_dir={run_dir}"))  # every checkpoint has its row
    capsys.readouterr()
    evaluate(settings(f"checkpoint={run_dir / 'checkpoints' / 'epoch-0002.pt'}"))
    shown = [line for line in capsys.readouterr().out.splitlines() if "checkpoints/epoch-" in line]
    assert len(shown) == 1 and "checkpoints/epoch-0002.pt" in shown[0], shown  # that checkpoint, not the run's table
    other = fresh_copy(trained, tmp_path / "other")
    evaluate(settings(f"checkpoint={other / 'checkpoints' / 'epoch-0002.pt'}"))
    assert [r["checkpoint"] for r in read_rows(other / "eval")] == ["checkpoints/epoch-0002.pt"]


def test_a_moved_run_directory_still_evaluates(trained, tmp_path):
    moved = fresh_copy(trained, tmp_path / "elsewhere")
    best = evaluate(settings(f"run_dir={moved}"))
    assert best["checkpoint"].startswith("checkpoints/")
    assert json.loads((moved / "eval" / "best.json").read_text())["checkpoint"] == best["checkpoint"]


def test_flip_tta_averages_the_image_and_its_mirror(trained, tmp_path):
    run_dir = fresh_copy(trained, tmp_path)
    evaluate(settings(f"checkpoint={run_dir / 'checkpoints' / 'epoch-0003.pt'}", "tta=flip"))
    saved = torch.load(run_dir / "eval" / "predictions" / "epoch-0003.val.flip.pt", weights_only=True)
    state = checkpoint_files.load(run_dir / "checkpoints" / "epoch-0003.pt")
    config = OmegaConf.create(state["config"])
    model = models.build(config.model)
    model.load_state_dict(state["model"])
    model.eval()
    x = torch.stack([x for x, _ in datasets.build_splits(config.dataset)["val"]])
    with torch.no_grad():
        expected = ((model(x).softmax(1) + model(x.flip(-1)).softmax(1)) / 2).log()
    torch.testing.assert_close(saved["log_probabilities"], expected, rtol=1e-4, atol=1e-5)


def test_ensemble_of_top_checkpoints_averages_probabilities(trained, tmp_path):
    run_dir = fresh_copy(trained, tmp_path)
    result = evaluate(settings(f"run_dir={run_dir}", "ensemble_top_k=2"))
    rows = sorted(read_rows(run_dir / "eval"), key=lambda r: (-r["top1"], r["epoch"]))[:2]
    probabilities = [torch.load(run_dir / "eval" / "predictions" / f"{Path(r['checkpoint']).stem}.val.pt",
                                weights_only=True) for r in rows]
    mean = (probabilities[0]["log_probabilities"].exp() + probabilities[1]["log_probabilities"].exp()) / 2
    expected_top1 = float((mean.argmax(1) == probabilities[0]["labels"]).float().mean())
    assert result["top1"] == pytest.approx(expected_top1)
    assert json.loads((run_dir / "eval" / "ensemble_top2.val.json").read_text())["ensemble"]["n"] == 14


def test_ensemble_of_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = []
    for seed in (1, 2):
        train_job(compose_config([*TINY, f"trainer.seed={seed}"]), tmp_path / f"seed{seed}")
        runs.append(str(tmp_path / f"seed{seed}"))
    result = evaluate(settings(f"ensemble=[{runs[0]},{runs[1]}]"))
    assert result["n"] == 14
    written = list((tmp_path / "outputs" / "ensembles").glob("*/ensemble.val.json"))
    assert len(json.loads(written[0].read_text())["members"]) == 2


def test_one_ranking_of_checkpoints_ties_to_the_earlier_one(tmp_path):
    def row(epoch, top1, loss, split="val", tta="none"):
        return {"checkpoint": f"checkpoints/epoch-000{epoch}.pt", "epoch": epoch, "split": split, "tta": tta,
                "top1": top1, "loss": loss}

    (tmp_path / "checkpoints").mkdir()
    for epoch in range(1, 6):
        (tmp_path / "checkpoints" / f"epoch-000{epoch}.pt").touch()
    rows = [row(3, 0.9, 0.30), row(1, 0.9, 0.20), row(2, 0.8, 0.10), row(4, 1.0, 0.05, split="test"),
            row(5, 1.0, 0.01, tta="flip")]
    assert [r["epoch"] for r in results.ranked(rows, "top1", "auto", "none", tmp_path)] == [1, 3, 2]
    assert [r["epoch"] for r in results.ranked(rows, "loss", "auto", "none", tmp_path)] == [2, 1, 3]  # lower is better
    assert [r["epoch"] for r in results.ranked(rows, "top1", "min", "none", tmp_path)] == [2, 1, 3]
    assert results.best_row(rows, "top1", "auto", "flip", tmp_path)["epoch"] == 5
    assert results.best_row(rows, "top1", "auto", "none", tmp_path) == results.ranked(rows, "top1", "auto", "none",
                                                                                      tmp_path)[0]
    assert results.best_row([], "top1", "auto", "none", tmp_path) is None
    (tmp_path / "checkpoints" / "epoch-0001.pt").unlink()  # deleted: never ranked
    assert [r["epoch"] for r in results.ranked(rows, "top1", "auto", "none", tmp_path)] == [3, 2]


def test_metrics_csv_is_rewritten_whole_from_the_rows(tmp_path):
    row = {"checkpoint": "checkpoints/epoch-0001.pt", "epoch": 1, "global_step": 3, "split": "val", "tta": "none",
           "n": 14, "loss": 0.5, "top1": 0.75, "top5": 1.0, "balanced_accuracy": 0.7, "ece": 0.1,
           "top1_ci_low": 0.5, "top1_ci_high": 0.9, "per_class_accuracy": [1.0, None], "seconds": 0.1}
    results.append_row(tmp_path, row)
    results.append_row(tmp_path, {**row, "epoch": 2, "checkpoint": "checkpoints/epoch-0002.pt"})
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0] == ("checkpoint,epoch,global_step,weights,split,tta,n,loss,top1,top5,balanced_accuracy,ece,"
                        "cross_entropy,top1_ci_low,top1_ci_high")
    # a row written before cross_entropy had its own column (this one) reads with that cell empty
    assert lines[1:] == [f"checkpoints/epoch-000{e}.pt,{e},3,raw,val,none,14,0.5,0.75,1.0,0.7,0.1,,0.5,0.9" for e in (1, 2)]
    assert [r["epoch"] for r in read_rows(tmp_path)] == [1, 2]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


@pytest.mark.parametrize(("overrides", "message"), [
    (["run_dir=/nonexistent/run"], "is not a run directory"),
    ([], "no run to evaluate"),
    (["checkpoint=/nonexistent.pt"], "does not exist"),
])
def test_bad_arguments_get_one_clear_message(overrides, message):
    with pytest.raises(UserError, match=message):
        evaluate(settings(*overrides))


def test_a_split_the_dataset_does_not_have(trained, tmp_path):
    run_dir = fresh_copy(trained, tmp_path)
    with pytest.raises(UserError, match="split='train2' is not a split"):
        evaluate(settings(f"run_dir={run_dir}", "split=train2", "checkpoint=" + str(run_dir / "checkpoints/epoch-0001.pt")))


def test_a_checkpoint_from_a_different_model(trained, tmp_path):
    run_dir = fresh_copy(trained, tmp_path)
    path = run_dir / "checkpoints" / "epoch-0001.pt"
    state = checkpoint_files.load(path)
    state["config"]["model"]["hidden"] = 32  # the weights no longer fit the described model
    checkpoint_files.save_atomic(state, path)
    with pytest.raises(UserError, match="does not fit the model of its config"):
        evaluate(settings(f"checkpoint={path}"))


@pytest.mark.slow
def test_watch_follows_a_training_run_in_another_process(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "runner", *TINY, "dataset.train_size=3000", "model.hidden=512", "trainer.epochs=4",
               f"hydra.run.dir={run_dir}"]
    training = subprocess.Popen(command, cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        best = evaluate(settings(f"run_dir={run_dir}", "watch=true", "poll_seconds=0.1", "galleries=false"))
    finally:
        training.wait(timeout=120)
    assert training.returncode == 0
    rows = read_rows(run_dir / "eval")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    end = json.loads((run_dir / "run.json").read_text())["end_time"]
    assert rows[0]["evaluated_at"] < end  # evaluated while the run was still training
    assert best["checkpoint"] in {r["checkpoint"] for r in rows}


def test_a_named_checkpoint_that_cannot_be_evaluated_is_an_error(trained, tmp_path):
    """checkpoint=FILE asks for that file: unreadable, it is an error with the reason, not an empty table."""
    run_dir = fresh_copy(trained, tmp_path)
    path = run_dir / "checkpoints" / "epoch-0002.pt"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UserError, match="epoch-0002.pt is truncated"):
        evaluate_run(run_dir, settings(), only=path)
    result = subprocess.run([sys.executable, "-m", "runner.evaluate", f"checkpoint={path}"], capture_output=True,
                            text=True, env=cli_env(), cwd=tmp_path, timeout=300)
    assert result.returncode == 2 and "truncated" in result.stdout and "Traceback" not in result.stdout + result.stderr


def test_a_torn_line_in_metrics_jsonl_is_skipped_and_its_checkpoint_evaluated_again(trained, tmp_path, caplog):
    """A writer killed mid-line leaves half a row: later runs warn, re-evaluate that checkpoint, and go on."""
    run_dir = fresh_copy(trained, tmp_path)
    evaluate_run(run_dir, settings())
    metrics_file = run_dir / "eval" / "metrics.jsonl"
    lines = metrics_file.read_text().splitlines()
    metrics_file.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])  # the last row torn
    best = evaluate_run(run_dir, settings())
    assert "metrics.jsonl line 3" in caplog.text and best is not None
    rows = read_rows(run_dir / "eval")
    assert sorted(r["checkpoint"] for r in rows) == [f"checkpoints/epoch-000{e}.pt" for e in (1, 2, 3)]


def test_retention_keeps_the_best_checkpoint_and_rankings_skip_deleted_files(tmp_path):
    """checkpoint.keep_last=1 after the evaluator has ranked earlier checkpoints (early stopping: the best
    is not the newest): retention keeps the best as well, and a row whose file is gone is never chosen."""
    run_dir = tmp_path / "run"
    base = [*TINY, "evaluate.after_training=true", "evaluate.galleries=true", "evaluate.metric=loss",
            "evaluate.direction=max"]  # "max loss" makes the first checkpoint the best, and not the newest
    train_job(compose_config([*base, "trainer.epochs=2"]), run_dir)
    best_before = json.loads((run_dir / "eval" / "best.json").read_text())["checkpoint"]
    assert best_before == "checkpoints/epoch-0001.pt"
    result = train_job(compose_config([*base, "trainer.epochs=4", "checkpoint.keep_last=1"]), run_dir)
    assert (run_dir / best_before).exists(), "retention deleted the best checkpoint"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["epoch-0001.pt", "epoch-0004.pt"]
    assert result["best"]["checkpoint"] == best_before

    (run_dir / best_before).unlink()  # gone anyway (by hand): the ranking must not pick its row
    best = evaluate_run(run_dir, settings("metric=loss", "direction=max"))
    assert (run_dir / best["checkpoint"]).exists()


def test_top5_is_left_out_where_it_says_nothing(tmp_path, capsys):
    """With 5 classes or fewer every label is among the top 5: the table shows '-' and top5 is refused as metric."""
    from runner.config.schema import validate
    from runner.evaluation.metrics import summarize

    log_probs = torch.log_softmax(torch.randn(6, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    assert summarize(log_probs, torch.tensor([0, 1, 2, 0, 1, 2]), 3)["top5"] is None
    assert summarize(torch.log_softmax(torch.randn(6, 7), dim=1), torch.arange(6), 7)["top5"] is not None
    three = [*TINY, "dataset.num_classes=3"]
    train_job(compose_config([*three, "evaluate.after_training=true"]), tmp_path / "run")
    table = capsys.readouterr().out
    assert "checkpoints/epoch-0002.pt        2" in table and "       -" in table
    with pytest.raises(UserError, match=r"evaluate.metric='top5' is 100% by construction with 3 classes. "
                                        r"Fix: evaluate.metric=top1"):
        validate(compose_config([*three, "evaluate.metric=top5"]))


def test_flip_tta_that_lowers_accuracy_is_named_with_its_figures(caplog):
    from runner.evaluation.evaluator import warn_if_flipping_hurts

    def row(epoch, tta, top1):
        return {"checkpoint": f"checkpoints/epoch-000{epoch}.pt", "epoch": epoch, "split": "val", "tta": tta, "top1": top1}

    rows = [row(1, "none", 0.9), row(2, "none", 0.978), row(1, "flip", 0.95), row(2, "flip", 0.942)]
    with caplog.at_level("INFO"):
        warn_if_flipping_hurts(rows, "val")
    assert ("tta=flip lowers top-1 of checkpoints/epoch-0002.pt from 97.80% to 94.20% (1 of 2 checkpoints worse): "
            "mirroring changes what these images mean") in caplog.text
    caplog.clear()
    warn_if_flipping_hurts([row(1, "none", 0.9), row(1, "flip", 0.95)], "val")
    assert caplog.text == ""  # it helps here: nothing to say


def test_a_confusion_matrix_of_many_classes_shows_the_most_confused_ones(tmp_path):
    import warnings

    from runner.evaluation.reports import LEGIBLE_CLASSES, classes_to_show, confusion_matrix_png

    many = torch.diag(torch.full((102,), 5)) + torch.roll(torch.eye(102, dtype=torch.long), 1, dims=1)
    assert len(classes_to_show(many)) == LEGIBLE_CLASSES  # confusions everywhere: as many as stay legible

    confusion = torch.diag(torch.full((102,), 5))
    confusion[40, 7], confusion[7, 40], confusion[90, 2] = 9, 3, 4  # the confusions, by count
    shown = classes_to_show(confusion)
    assert shown == [40, 7, 90, 2]  # the classes of the confusions, most confused first
    assert classes_to_show(torch.eye(7, dtype=torch.long)) == list(range(7))  # few classes: all of them
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no matplotlib warning reaches the terminal
        confusion_matrix_png(confusion, [f"class {k}" for k in range(102)], tmp_path / "confusion.png")
    assert (tmp_path / "confusion.png").stat().st_size > 10_000


def test_a_run_builds_its_split_once_and_uses_the_trainers_workers_and_micro_batch(trained, tmp_path, monkeypatch):
    """Large eval batches are slower on a CPU (about 260 vs 470 images/s at 256 vs 32 for the ConvNet at 128 px):
    by default the evaluator takes the micro-batch the run trained with, which fits the device's memory."""
    from runner.evaluation.saved_splits import built_split

    run_dir = fresh_copy(trained, tmp_path)
    built_split.cache_clear()
    builds, workers, batch_sizes = [], [], []
    real_build, real_loader = datasets.build_splits, loaders.eval_loader
    monkeypatch.setattr(datasets, "build_splits", lambda cfg: builds.append(1) or real_build(cfg))
    monkeypatch.setattr(loaders, "eval_loader", lambda ds, bs, nw, pin_memory, device: workers.append(nw) or
                        batch_sizes.append(bs) or real_loader(ds, bs, nw, pin_memory))
    evaluate_run(run_dir, settings(f"run_dir={run_dir}"))
    assert len(read_rows(run_dir / "eval")) == 3 and len(builds) == 1  # three checkpoints, one split built
    trainer = OmegaConf.create(checkpoint_files.load(run_dir / "checkpoints" / "epoch-0001.pt")["config"]).trainer
    assert set(workers) == {trainer.num_workers} and set(batch_sizes) == {trainer.micro_batch_size}
    other = fresh_copy(trained, tmp_path / "other")
    evaluate_run(other, settings(f"run_dir={other}", "batch_size=5", "num_workers=0"))  # set: as set
    assert batch_sizes[-1] == 5 and workers[-1] == 0


# no evaluate.trust: the run's own loss module is trusted by the evaluation after training (the user named it)
FOCAL = ["loss._target_=tests.byo_losses.focal", "~loss.label_smoothing", "+loss.gamma=2"]


def test_the_evaluators_loss_is_the_configured_loss_and_cross_entropy_has_its_own_name(tmp_path, capsys):
    """Focal loss: training logs it, so the evaluator's `loss` is it too; cross-entropy is `cross_entropy`."""
    run_dir = tmp_path / "run"
    train_job(compose_config([*TINY, *FOCAL, "trainer.epochs=1", "evaluate.after_training=true"]), run_dir)
    (row,) = read_rows(run_dir / "eval")
    table = capsys.readouterr().out
    assert "val split (best by top1 marked *; loss: tests.byo_losses.focal):" in table
    assert f"{row['loss']:>8.4f} {row['cross_entropy']:>8.4f}" in table and "     loss xentropy   top-1" in table
    log_p, labels = load_row_predictions(run_dir / "eval", row)
    log_p_true = log_p.gather(1, labels[:, None]).squeeze(1)
    focal = -((1 - log_p_true.exp()) ** 2) * log_p_true  # by hand, gamma=2
    assert row["loss"] == pytest.approx(float(focal.mean()), rel=1e-5)
    assert row["cross_entropy"] == pytest.approx(float(-log_p_true.mean()), rel=1e-5)
    assert row["loss"] < row["cross_entropy"]  # the two words no longer name one figure
    header, values = (run_dir / "eval" / "metrics.csv").read_text().splitlines()
    assert float(dict(zip(header.split(","), values.split(","), strict=True))["cross_entropy"]) == \
        pytest.approx(row["cross_entropy"])
    best = json.loads((run_dir / "eval" / "best.json").read_text())
    assert best["metrics"]["cross_entropy"] == row["cross_entropy"]
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    assert [e.value for e in events.Scalars("eval/val/cross_entropy")] == pytest.approx([row["cross_entropy"]])
    assert [e.value for e in events.Scalars("eval/val/loss")] == pytest.approx([row["loss"]])


def test_label_smoothing_is_the_evaluators_loss_by_hand():
    generator = torch.Generator().manual_seed(0)
    log_p = torch.log_softmax(3 * torch.randn(9, 4, generator=generator), dim=1)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0])
    config = {"loss": {"_target_": "runner.training.losses.cross_entropy", "_partial_": True, "label_smoothing": 0.1}}
    summary = metrics.summarize(log_p, labels, 4, metrics.configured_loss(config, trusted=[]))
    per_sample = [0.9 * -float(log_p[i, labels[i]]) + 0.1 * -float(log_p[i].mean()) for i in range(9)]
    assert summary["loss"] == pytest.approx(sum(per_sample) / 9, rel=1e-6)
    assert summary["cross_entropy"] == pytest.approx(-sum(float(log_p[i, labels[i]]) for i in range(9)) / 9, rel=1e-6)
    plain = metrics.summarize(log_p, labels, 4, metrics.configured_loss({"loss": {**config["loss"], "label_smoothing": 0}},
                                                                        trusted=[]))
    assert plain["loss"] == pytest.approx(plain["cross_entropy"])


def test_an_untrusted_loss_is_not_called_and_the_loss_says_cross_entropy(caplog):
    config = {"loss": {"_target_": "tests.byo_losses.focal", "_partial_": True, "gamma": 2}}
    loss = metrics.configured_loss(config, trusted=[])
    assert loss.name == "cross_entropy (the run's loss tests.byo_losses.focal is not trusted: trust=[tests.byo_losses])"
    assert "not trusted" in caplog.text and "Fix: trust=[tests.byo_losses]" in caplog.text
