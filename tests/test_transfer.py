"""Transfer learning end to end: a timm architecture pretrained on one task (the ten digits), saved as
safetensors, fine-tuned on a second task with few samples (even or odd, on images it has not seen) from
`model.weights_path`, against the same model from scratch."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import save_file

from runner.common import checkpoint_files
from runner.run import train_and_evaluate
from tests.conftest import compose_config

COMMON = ["dataset=custom", "dataset._target_=tests.transfer_data.digits_task", "dataset.channels=1",
          "dataset.image_size=[8,8]", "dataset.normalize=dataset", "model=timm", "model.name=test_resnet",
          "trainer.batch_size=20", "trainer.micro_batch_size=20", "trainer.device=cpu", "trainer.deterministic=true"]


def best_top1(run_dir) -> float:
    return json.loads((run_dir / "eval" / "best.json").read_text())["value"]


@pytest.mark.slow
def test_a_pretrained_body_fine_tuned_on_few_samples_beats_the_same_model_from_scratch(tmp_path):
    pretrain = tmp_path / "pretrain"
    train_and_evaluate(compose_config([*COMMON, "+dataset.task=digits", "dataset.num_classes=10", "trainer.epochs=4",
                                       "trainer.batch_size=100", "trainer.micro_batch_size=100", "optimizer.lr=3e-3",
                                       "checkpoint.every_epochs=4", "evaluate.after_training=false"]), pretrain)
    state = checkpoint_files.load_newest(pretrain / "checkpoints")[1]["model"]
    weights = tmp_path / "digits_test_resnet.safetensors"
    save_file({key: value.contiguous() for key, value in state.items()}, str(weights))

    parity = [*COMMON, "+dataset.task=parity", "+dataset.train_size=20", "dataset.num_classes=2", "trainer.epochs=12",
              "checkpoint.every_epochs=12"]
    train_and_evaluate(compose_config([*parity, f"model.weights_path={weights}"]), tmp_path / "finetuned")
    train_and_evaluate(compose_config(parity), tmp_path / "scratch")
    finetuned, scratch = best_top1(tmp_path / "finetuned"), best_top1(tmp_path / "scratch")
    print(f"parity from 20 samples, validation top-1: fine-tuned {finetuned:.3f}, from scratch {scratch:.3f}")
    assert finetuned > scratch + 0.1, (finetuned, scratch)
    record = json.loads((tmp_path / "finetuned" / "run.json").read_text())["weights"]
    assert record["source"] == "file" and record["file"] == str(weights.resolve())
