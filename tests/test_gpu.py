"""The CUDA paths: bf16 and fp16 autocast, the GradScaler, channels_last. Skipped without a GPU."""

from __future__ import annotations

import math

import pytest
import torch

from runner.run import train_and_evaluate as train_job
from tests.conftest import TINY, compose_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; CI and this CPU machine have none"),
]

CONVNET = [*TINY, "model=convnet", "model.channels=8", "model.n_blocks=2", "trainer.device=cuda",
           "trainer.epochs=6", "optimizer.lr=0.01", "dataset.image_size=[32,32]"]


@pytest.mark.parametrize("precision", ["bf16", "16", "32"])
def test_mixed_precision_trains_on_cuda(tmp_path, precision):
    figures = train_job(compose_config([*CONVNET, f"trainer.precision={precision}"]), tmp_path / precision)["train"]
    assert figures["loss"] < 0.5 * math.log(7), figures


def test_auto_precision_picks_bf16_where_supported():
    from runner.runtime import autocast_dtype

    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert autocast_dtype("auto", torch.device("cuda")) == expected


def test_fp16_scaler_state_is_checkpointed(tmp_path):
    from runner import checkpoint_files

    train_job(compose_config([*CONVNET, "trainer.precision=16", "trainer.epochs=1"]), tmp_path / "run")
    state = checkpoint_files.load(tmp_path / "run" / "checkpoints" / "epoch-0001.pt")
    assert state["scaler"]["scale"] > 0


def test_channels_last_and_compile_train_on_cuda(tmp_path):
    figures = train_job(compose_config([*CONVNET, "trainer.channels_last=true", "trainer.compile=true"]),
                        tmp_path / "run")["train"]
    assert figures["loss"] < 0.5 * math.log(7), figures
