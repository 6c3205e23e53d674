"""eval/dynamics.png and .csv: the fixed set, the flips and the wiggle, from constructed prediction files and
from two short runs (a healthy learning rate and one 10x too high)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from runner.common import checkpoint_files
from runner.evaluation import dynamics, predictions


def test_the_fixed_set_is_balanced_seeded_and_chosen_from_the_labels_alone():
    labels = torch.tensor([0] * 20 + [1] * 20 + [2] * 20)
    chosen = dynamics.fixed_samples(labels, size=6)
    assert chosen == dynamics.fixed_samples(labels.clone(), size=6)  # every evaluation picks the same ones
    assert sorted(int(labels[i]) for i in chosen) == [0, 0, 1, 1, 2, 2]
    assert len(set(chosen)) == 6
    uneven = torch.tensor([0] * 10 + [1] + [2] * 10)  # class 1 has one sample: the others fill its place
    picked = [int(uneven[i]) for i in dynamics.fixed_samples(uneven, size=5)]
    assert sorted(picked) == [0, 0, 1, 2, 2]
    assert len(dynamics.fixed_samples(labels[:4], size=32)) == 4  # a split smaller than the set: all of it


def log_probs_predicting(predicted: list[int], classes: int = 2, p: float = 0.8) -> torch.Tensor:
    """Log-probabilities whose argmax is `predicted`, with probability p on it."""
    rows = torch.full((len(predicted), classes), (1 - p) / (classes - 1))
    rows[torch.arange(len(predicted)), torch.tensor(predicted)] = p
    return rows.log()


def constructed_run(tmp_path: Path, full: dict[int, list[int]], light: dict[int, list[int]], labels: list[int]) -> Path:
    """A run folder with rows and predictions of full checkpoints (step -> predicted classes) and predictions of
    light ones (checkpoints/updates/update-STEP.pt), as the evaluator saves them."""
    run_dir = tmp_path / "run"
    eval_dir = run_dir / "eval"
    eval_dir.mkdir(parents=True)
    with open(eval_dir / "metrics.jsonl", "w") as file:
        for epoch, (step, predicted) in enumerate(sorted(full.items()), start=1):
            row = {"checkpoint": f"checkpoints/epoch-{epoch:04d}.pt", "epoch": epoch, "global_step": step,
                   "split": "val", "tta": "none", "precision": "32", "batch_size": None, "variant": "",
                   "weights": "raw", "top1": 0.5}
            file.write(json.dumps(row) + "\n")
            predictions.save_predictions(eval_dir, row, log_probs_predicting(predicted), torch.tensor(labels))
    for step, predicted in light.items():
        row = {"checkpoint": f"checkpoints/updates/update-{step:08d}.pt", "split": "val", "tta": "none"}
        predictions.save_predictions(eval_dir, row, log_probs_predicting(predicted), torch.tensor(labels))
    return run_dir


def read_csv(path: Path) -> list[dict]:
    with open(path) as file:
        return list(csv.DictReader(file))


def test_flips_and_wiggle_by_hand_from_constructed_prediction_files(tmp_path):
    labels = [0, 1, 1, 0]
    full = {10: [0, 0, 1, 1], 30: [0, 1, 1, 0], 40: [0, 1, 1, 0]}
    light = {0: [1, 1, 1, 1], 20: [0, 1, 0, 0], 30: [1, 0, 0, 1]}  # step 30 is also a full one: the full one counts
    run_dir = constructed_run(tmp_path, full, light, labels)
    assert predictions.predictions_path(run_dir / "eval", "checkpoints/updates/update-00000020.pt", "val", "none") \
        == run_dir / "eval" / "predictions" / "updates" / "update-00000020.val.pt"
    dynamics.write(run_dir, writer=None)
    rows = read_csv(run_dir / "eval" / "dynamics.csv")
    assert [(r["checkpoint"], int(r["step"])) for r in rows] == [
        ("checkpoints/updates/update-00000000.pt", 0), ("checkpoints/epoch-0001.pt", 10),
        ("checkpoints/updates/update-00000020.pt", 20), ("checkpoints/epoch-0002.pt", 30),
        ("checkpoints/epoch-0003.pt", 40)]
    # right per point: FTTF TFTF TTFT TTTT TTTT; predictions changed: -, samples 0 1, samples 1 2 3, sample 2, none
    assert [r["wiggle"] for r in rows] == ["", "0.5", "0.75", "0.25", "0.0"]
    assert [r["flips"] for r in rows] == ["", "2", "3", "1", "0"]
    assert [r["right"] for r in rows] == ["2", "2", "3", "4", "4"]
    image = Image.open(run_dir / "eval" / "dynamics.png")
    assert image.size[0] > 400 and image.size[1] > 300


def test_tensorboard_images_are_thinned_evenly_keeping_the_last():
    assert dynamics.thinned([1, 2, 3], most=5) == [1, 2, 3]
    assert dynamics.thinned(list(range(10)), most=4) == [0, 3, 6, 9]


def test_a_run_without_evaluated_validation_rows_gets_no_figure(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "eval").mkdir(parents=True)
    assert dynamics.write(run_dir, writer=None) is None
    assert not (run_dir / "eval" / "dynamics.png").exists()


def light_copy(full: Path, step: int) -> None:
    """A light checkpoint as checkpoint.every_updates writes one (the full one without its training state) at
    update `step` of the run."""
    state = checkpoint_files.load(full)
    for key in ("optimizer", "schedule", "scaler", "rng", "sampler", "ema", "swa"):
        state.pop(key, None)
    light = full.parent / "updates" / f"update-{step:08d}.pt"
    light.parent.mkdir(exist_ok=True)
    checkpoint_files.save_atomic({**state, "global_step": step, "light": True}, light)


@pytest.mark.slow
def test_light_checkpoints_feed_the_figure_and_a_too_high_learning_rate_wiggles_more(tmp_path):
    from runner.evaluation.evaluator import evaluate_run
    from runner.evaluation.results import read_rows
    from runner.run import train_and_evaluate as train_job
    from tests.conftest import compose_config

    def wiggle_of(lr: float, name: str, galleries: bool) -> float:
        run_dir = tmp_path / name
        train_job(compose_config(WIGGLY + [f"optimizer.lr={lr}"]), run_dir)
        light_copy(run_dir / "checkpoints" / "epoch-0001.pt", 5)  # an update of its own
        light_copy(run_dir / "checkpoints" / "epoch-0002.pt", 30)  # epoch-0002's update: the full one is drawn
        evaluate_run(run_dir, compose_config([f"galleries={str(galleries).lower()}"], config_name="evaluate"))
        assert (run_dir / "eval" / "first_layer.png").exists() == galleries  # beside the best checkpoint's figures
        rows = read_csv(run_dir / "eval" / "dynamics.csv")
        assert all(r["checkpoint"].startswith("checkpoints/epoch-") for r in read_rows(run_dir / "eval"))  # no light row
        assert (run_dir / "eval" / "predictions" / "updates" / "update-00000005.val.pt").exists()
        assert [(r["step"], r["checkpoint"][-8:]) for r in rows][:3] == [  # the light one at 30 gave way to epoch-0002
            ("5", "00005.pt"), ("15", "-0001.pt"), ("30", "-0002.pt")]
        wiggles = [float(r["wiggle"]) for r in rows if r["wiggle"]]
        return sum(wiggles) / len(wiggles)

    healthy, too_high = wiggle_of(3e-3, "healthy", galleries=True), wiggle_of(3e-2, "too_high", galleries=False)
    assert too_high > healthy + 0.05, (healthy, too_high)
    events = EventAccumulator(str(tmp_path / "healthy" / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert "eval/dynamics" in events.Tags()["images"]
    assert not math.isnan(healthy)


WIGGLY = ["dataset=digits", "dataset.subset=240", "trainer.epochs=6", "trainer.batch_size=16", "trainer.micro_batch_size=16",
          "checkpoint.every_epochs=1", "evaluate.after_training=false", "trainer.seed=0"]


def test_a_light_checkpoint_given_to_the_evaluator_is_refused_in_one_line(tmp_path):
    from omegaconf import OmegaConf

    from runner.common.errors import UserError
    from runner.evaluation.evaluator import evaluate_run
    from runner.evaluation.run_dirs import run_directory

    light = tmp_path / "checkpoints" / "updates" / "update-00000005.pt"
    light.parent.mkdir(parents=True)
    light.write_bytes(b"x")
    for settings in ({"checkpoint": str(light), "run_dir": str(tmp_path)}, {"checkpoint": str(light)}):
        with pytest.raises(UserError, match="light checkpoint.*Fix: give an epoch-NNNN.pt"):
            run_directory(OmegaConf.create(settings))
    with pytest.raises(UserError, match="light checkpoint"):
        evaluate_run(tmp_path, OmegaConf.create({"split": "val"}), only=light)
    assert not (tmp_path / "eval").exists() and not (light.parent / "eval").exists()
