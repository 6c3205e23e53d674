"""A checkpoint cannot run code in the evaluator: its saved config may name only trusted builders.

The crafted files load cleanly with weights_only=True; the payload is in the saved `model`
config, which the evaluator would hand to Hydra's instantiate.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest

from runner.common import checkpoint_files
from runner.common.errors import UserError
from runner.evaluation.evaluator import evaluate_run
from runner.run import train_and_evaluate
from tests.conftest import TINY, compose_config, run_cli


class CreatesTheMarker:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")  # unpickling this opens (creates) the marker file


def payload(marker: Path) -> dict:
    """A Hydra config that, instantiated, creates `marker`: torch.load of a pickle, past Hydra's blocklist."""
    pickled = marker.parent / "payload.pt"
    pickled.write_bytes(pickle.dumps(CreatesTheMarker(marker)))
    return {"_target_": "torch.load", "f": str(pickled), "weights_only": False}


CRAFTED = ("top-level target", "nested target", "a runner.models function that is not a builder",
           "an interpolation that makes a target")


def crafted_models(marker: Path) -> dict[str, dict]:
    """The crafted model configs by name (CRAFTED); the payload's pickle is written beside `marker`."""
    return {
        "top-level target": payload(marker),
        "nested target": {"_target_": "runner.models.linear", "num_classes": 7, "in_channels": 3,
                          "image_size": payload(marker)},
        "a runner.models function that is not a builder": {"_target_": "runner.models.build", "cfg": {"x": 1}},
        "an interpolation that makes a target": {"_target_": "runner.models.linear", "num_classes": 7,
                                                 "in_channels": 3, "image_size": "${oc.decode:'[11, 13]'}"},
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    train_and_evaluate(compose_config([*TINY, "model=linear", "trainer.epochs=1"]), run_dir)
    return run_dir


def plant(trained: Path, tmp_path: Path, model_config: dict) -> Path:
    """A copy of the run whose only checkpoint carries `model_config`."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    path = run_dir / "checkpoints" / "epoch-0001.pt"
    state = checkpoint_files.load(path)
    state["config"]["model"] = model_config
    checkpoint_files.save_atomic(state, path)
    return run_dir


def test_the_crafted_cases_are_the_ones_named(tmp_path):
    assert tuple(crafted_models(tmp_path / "x")) == CRAFTED


@pytest.mark.parametrize("case", CRAFTED)  # not crafted_models(...) here: it writes the pickle where it is told
def test_a_crafted_checkpoint_never_runs_its_payload(case, trained, tmp_path):
    marker = tmp_path / "PWNED"
    run_dir = plant(trained, tmp_path, crafted_models(marker)[case])
    settings = compose_config([], config_name="evaluate")
    with pytest.raises(UserError) as refused:
        evaluate_run(run_dir, settings, run_dir / "checkpoints" / "epoch-0001.pt")
    assert not marker.exists(), "the payload ran"
    message = str(refused.value)
    assert "nothing was built" in message and ("trust=[" in message or "interpolation" in message), message


def test_the_command_refuses_in_one_line(trained, tmp_path):
    marker = tmp_path / "PWNED"
    run_dir = plant(trained, tmp_path, payload(marker))
    for args in ([f"checkpoint={run_dir}/checkpoints/epoch-0001.pt"], [f"run_dir={run_dir}"]):
        result = run_cli(args, cwd=tmp_path, module="runner.evaluate")
        assert not marker.exists(), "the payload ran"
        assert result.returncode == 2, result.stdout + result.stderr
        assert "torch.load" in result.stdout and "Traceback" not in result.stdout + result.stderr


def test_a_module_the_user_names_is_trusted(trained, tmp_path):
    """Your own model builder keeps working once you name its module (tests/byo_models.py here)."""
    run_dir = tmp_path / "own"
    cfg = compose_config([*TINY, "trainer.epochs=1", "model=linear", "model._target_=tests.byo_models.tiny",
                          "evaluate.after_training=false"])
    train_and_evaluate(cfg, run_dir)
    settings = compose_config([], config_name="evaluate")
    with pytest.raises(UserError, match=r"tests\.byo_models\.tiny.*evaluate\.trust|trust=\[tests\.byo_models\]"):
        evaluate_run(run_dir, settings)
    trusting = compose_config(["trust=[tests.byo_models]"], config_name="evaluate")
    assert evaluate_run(run_dir, trusting)["checkpoint"] == "checkpoints/epoch-0001.pt"


def test_training_trusts_its_own_model_for_the_evaluation_after_it(tmp_path):
    cfg = compose_config([*TINY, "trainer.epochs=1", "model=linear", "model._target_=tests.byo_models.tiny",
                          "evaluate.after_training=true", "evaluate.galleries=false"])
    assert train_and_evaluate(cfg, tmp_path / "run")["best"]["checkpoint"] == "checkpoints/epoch-0001.pt"
