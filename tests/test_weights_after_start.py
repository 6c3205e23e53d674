"""Pretrained weights are needed once, at a run's start: a resumed run (a SLURM requeue on a node without
internet) and the evaluator take every weight from the checkpoint and fetch nothing, and the run keeps
the record of what it started from."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from omegaconf import OmegaConf

from runner.common import checkpoint_files
from runner.evaluation.evaluator import model_of_checkpoint
from runner.run import train_and_evaluate
from tests.conftest import compose_config

TORCHVISION = ["dataset=synthetic", "dataset.image_size=[32,32]", "dataset.channels=3", "dataset.subset=8",
               "model=torchvision", "model.name=resnet18", "model.weights=IMAGENET1K_V1", "trainer.batch_size=8",
               "trainer.micro_batch_size=8", "checkpoint.every_epochs=1", "evaluate.after_training=false",
               "trainer.device=cpu"]


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """torchvision's ResNet-18 weights where its own download would have left them, inside RUNNER_WEIGHTS."""
    member = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    cached = tmp_path / "weights" / "torch" / "hub" / "checkpoints" / member.url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), cached)
    monkeypatch.setenv("RUNNER_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.delenv("TORCH_HOME", raising=False)
    return cached


def no_downloads(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_a_resumed_run_needs_no_pretrained_weights_and_keeps_their_record(tmp_path, monkeypatch, hub_cache):
    run_dir = tmp_path / "run"
    train_and_evaluate(compose_config([*TORCHVISION, "trainer.epochs=1"]), run_dir)
    started = json.loads((run_dir / "run.json").read_text())["weights"]
    assert started["sha256"] and started["source"] == "torchvision"
    hub_cache.unlink()  # the requeued job's node: no cache, no internet
    no_downloads(monkeypatch)
    train_and_evaluate(compose_config([*TORCHVISION, "trainer.epochs=2"]), run_dir)
    assert checkpoint_files.load_newest(run_dir / "checkpoints")[1]["epoch"] == 2
    assert json.loads((run_dir / "run.json").read_text())["weights"] == started


def test_the_evaluator_builds_a_checkpoints_model_without_its_pretrained_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNNER_WEIGHTS", str(tmp_path / "empty"))
    no_downloads(monkeypatch)
    config = OmegaConf.to_container(compose_config(TORCHVISION), resolve=True)
    trained = torchvision.models.resnet18(num_classes=config["dataset"]["num_classes"])
    model = model_of_checkpoint(config, {"model": trained.state_dict()}, tmp_path / "epoch-0001.pt",
                                torch.device("cpu"), trusted=[])
    assert torch.equal(model.layer4[1].conv2.weight, trained.layer4[1].conv2.weight)
