"""The evaluator on a device other than the CPU's (issue 22 item 7): whichever source the batches come from
(plain loader batches, uint8 batches finished on the device, dataset.cache=device's DeviceBatches), and for
every way the evaluator is reached (runner.evaluate and the evaluation after training, a TTA variant, one
checkpoint as early stopping and pruning ask for it, the look at the test split, an ensemble), the predictions and the labels reach the
metrics on one device, and the files written (predictions, figures) hold CPU tensors.

The stand-in for CUDA is torch's lazy-tensor device (torch._lazy, its TorchScript backend): a device of its
own that computes on this CPU, so the whole evaluation runs with real numbers, and a tensor left on it that
meets a CPU tensor is a RuntimeError, as a CUDA tensor's would be. (meta shows the crash too, but a meta
tensor cannot be copied back to the CPU, so it cannot show the fix.) tests/test_gpu.py runs the same
evaluations on CUDA where there is a GPU.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from runner.cli.evaluate import evaluate
from runner.evaluation import inference
from runner.evaluation.evaluator import evaluate_one
from runner.evaluation.results import read_rows
from runner.run import train_and_evaluate as train_job
from tests.conftest import TINY, compose_config, make_imagefolder

RUN = ["trainer.epochs=2", "checkpoint.every_epochs=1", "evaluate.after_training=false"]
IMAGES = [*RUN, "dataset=imagefolder", "dataset.image_size=[16,16]", "dataset.test_fraction=0.2",
          "trainer.batch_size=8", "trainer.micro_batch_size=4"]
SOURCES = {  # which batches the evaluator gets from the run's val and test splits
    "loader batches": TINY,
    "uint8 batches finished on the device": [*IMAGES, "dataset.cache=none"],
    "DeviceBatches (dataset.cache=device)": [*IMAGES, "dataset.cache=device"],
}


def settings(*overrides):
    return compose_config(list(overrides), config_name="evaluate")


def train_runs(folder: Path, extra: list[str] | None = None) -> dict[str, Path]:
    """A 2-epoch run (a checkpoint each epoch) for each source of batches; $RUNNER_CACHE must be set."""
    root = make_imagefolder(folder / "images", classes=3, per_class=10, size=(20, 24))
    runs = {}
    for number, (source, overrides) in enumerate(SOURCES.items()):
        data = [] if overrides is TINY else [f"dataset.root={root}"]
        runs[source] = folder / f"run{number}"
        train_job(compose_config([*overrides, *data, *(extra or [])]), runs[source])
    return runs


def evaluate_everywhere(run_dir: Path, device: str) -> None:
    """Every way the evaluator reaches a run's checkpoints, on `device`."""
    last = sorted((run_dir / "checkpoints").glob("epoch-*.pt"))[-1]
    evaluate(settings(f"run_dir={run_dir}", f"device={device}"))  # runner.evaluate, and after training
    evaluate(settings(f"run_dir={run_dir}", f"device={device}", "tta=flip"))  # a TTA variant
    assert evaluate_one(run_dir, settings(f"device={device}", "batch_size=3"), last) is not None  # early stopping
    evaluate(settings(f"run_dir={run_dir}", f"device={device}", "split=test"))  # the look at the test split
    evaluate(settings(f"run_dir={run_dir}", f"device={device}", "ensemble_top_k=2", "split=test"))  # an ensemble


def assert_evaluated_as_on_the_cpu(run_dir: Path, reference: Path, atol: float) -> None:
    """The rows, figures and ensemble are there; every predictions file holds CPU tensors (it loads without a
    map_location on a machine without the device) equal to a CPU evaluation's of the same run."""
    rows = read_rows(run_dir / "eval")
    variants = {(row["checkpoint"], row["split"], row["variant"]) for row in rows}
    assert {variant for _, split, variant in variants if split == "val"} == {"", "tta=flip", "batch_size=3"}, variants
    assert len([v for v in variants if v[1:] == ("test", "")]) == 2, variants
    assert (run_dir / "eval" / "confusion_matrix.png").is_file()
    assert (run_dir / "eval" / "ensemble_top2.test.json").is_file()
    files = sorted((run_dir / "eval" / "predictions").glob("*.pt"))
    assert len(files) == len(rows)
    for path in files:
        saved = torch.load(path, weights_only=True)
        assert {saved[key].device.type for key in ("log_probabilities", "labels")} == {"cpu"}, path.name
        expected = torch.load(reference / "eval" / "predictions" / path.name, weights_only=True)
        assert torch.equal(saved["labels"], expected["labels"]), path.name
        torch.testing.assert_close(saved["log_probabilities"], expected["log_probabilities"], atol=atol, rtol=0)


def copy_of(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to, ignore=shutil.ignore_patterns("eval"))
    return to


@pytest.fixture(scope="module")
def lazy_device() -> str:
    try:
        import torch._lazy.ts_backend

        torch._lazy.ts_backend.init()
    except (ImportError, AttributeError, RuntimeError) as error:
        pytest.skip(f"torch {torch.__version__} has no lazy-tensor device to stand in for CUDA here ({error})")
    return "lazy"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("devices")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RUNNER_CACHE", str(folder / "cache"))
        return train_runs(folder)


@pytest.mark.parametrize("source", SOURCES)
def test_every_evaluation_on_another_device_hands_the_metrics_one_device(runs, source, lazy_device, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("RUNNER_CACHE", str(runs[source].parent / "cache"))
    # lazy tensors refuse inference mode ("Cannot set version_counter for inference tensor"): the same
    # predict, under no_grad; how its batches, outputs and labels move between devices is what is tested
    monkeypatch.setattr("runner.evaluation.weights_evaluation.predict", torch.no_grad()(inference.predict.__wrapped__))
    on_cpu = copy_of(runs[source], tmp_path / "cpu")
    elsewhere = copy_of(runs[source], tmp_path / "elsewhere")
    evaluate_everywhere(on_cpu, "cpu")
    evaluate_everywhere(elsewhere, lazy_device)
    assert_evaluated_as_on_the_cpu(elsewhere, on_cpu, atol=1e-5)


def test_predictions_are_saved_as_cpu_tensors_from_any_device(lazy_device, tmp_path):
    from runner.evaluation.predictions import (
        load_predictions_file,
        predictions_of,
        save_predictions,
    )

    row = {"checkpoint": "checkpoints/epoch-0001.pt", "split": "val", "tta": "none"}
    log_probabilities = torch.randn(5, 3).log_softmax(1)
    labels = torch.tensor([0, 2, 1, 1, 0])
    save_predictions(tmp_path, row, log_probabilities.to(lazy_device), labels.to(lazy_device))
    saved = torch.load(predictions_of(tmp_path, row), weights_only=True)  # no map_location: as another program would
    assert saved["log_probabilities"].device.type == saved["labels"].device.type == "cpu"
    loaded = load_predictions_file(predictions_of(tmp_path, row), tmp_path.parent)
    assert torch.equal(loaded[0], log_probabilities) and torch.equal(loaded[1], labels)
