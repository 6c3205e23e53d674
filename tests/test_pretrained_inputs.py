"""Issue 25 item 3: a pretrained model's data is standardized with its weights' own mean/std unless
dataset.mean/std are set on the command line (logged either way), the same in training, the checks and the
evaluation; and the check pretrained_inputs catches the practice's silent bug ("initialized from a pretrained
checkpoint but didn't use the original mean"): each planted bug FAILs with its cause named, the right inputs PASS.

No download: timm's pretrained_cfg says what the weights expect without fetching them, and the one run that
builds the model starts from a weights file made here (a timm model built with pretrained=False).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from runner.checks.registry import CHECKS, PREFLIGHT
from runner.checks.setup import setup_for
from runner.common.errors import UserError
from runner.data.standardization import set_on_command_line, standardize_as_the_weights_expect
from tests.byo_data import stripes
from tests.conftest import compose_config, run_cli

HALF = "test_convnext.r160_in1k"  # timm's pretrained_cfg: mean 0.5, std 0.5 (as ViTs and Inception have)
IMAGENET = "test_efficientnet.r160_in1k"  # mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# the user's own photographs (PIL images: runner resizes and standardizes them)
STRIPES = ["dataset=custom", "dataset._target_=tests.byo_data.stripes", "dataset.num_classes=4",
           "dataset.image_size=[32,32]"]
ZERO_ONE = ["dataset.mean=[0,0,0]", "dataset.std=[1,1,1]"]


def pretrained(name: str) -> list[str]:
    return ["model=timm", f"model.name={name}", "model.pretrained=true"]


def decided(overrides: list[str]):
    """The composed config after the decision every command makes, and the line it logs."""
    cfg = compose_config(overrides)
    return cfg, standardize_as_the_weights_expect(cfg, overrides)


def pretrained_inputs(overrides: list[str]):
    cfg, _ = decided(overrides)
    return CHECKS["pretrained_inputs"](setup_for(cfg, torch.device("cpu")))


# ---- the data follows the weights ----

def test_a_pretrained_models_data_gets_its_weights_mean_and_std():
    cfg, line = decided([*STRIPES, *pretrained(HALF)])
    assert list(cfg.dataset.mean) == [0.5] * 3 and list(cfg.dataset.std) == [0.5] * 3
    assert f"standardizing with the weights' mean/std (timm pretrained_cfg of {HALF}): mean [0.5, 0.5, 0.5]" in line
    assert "dataset.mean/std ([0.5], [0.5]) set aside" in line, line


def test_the_line_says_the_size_the_weights_were_trained_at_where_the_run_uses_another():
    cfg, line = decided([*STRIPES, *pretrained(HALF)])  # trained at 160x160 (bicubic), run at 32x32
    assert line.endswith("; the weights were trained at 160x160 (bicubic resizing), this run uses "
                         "dataset.image_size=[32, 32] (bilinear): dataset.image_size=[160,160] matches them"), line
    _, same = decided([*STRIPES, *pretrained(HALF), "dataset.image_size=[160,160]"])
    assert "trained at" not in same


def test_a_one_channel_dataset_gets_the_channels_average():
    """A 3-channel stem adapted to grey (filters summed) saw the three channels' average."""
    cfg, line = decided(["dataset=digits", *pretrained(IMAGENET)])
    assert cfg.dataset.mean == pytest.approx([sum(IMAGENET_MEAN) / 3]) and cfg.dataset.std == pytest.approx(
        [sum(IMAGENET_STD) / 3])
    assert "set aside" in line


def test_dataset_mean_on_the_command_line_wins_and_is_logged():
    cfg, line = decided([*STRIPES, *pretrained(HALF), *ZERO_ONE])
    assert list(cfg.dataset.mean) == [0, 0, 0] and list(cfg.dataset.std) == [1, 1, 1]
    assert line.startswith("standardizing with dataset.mean/std as set on the command line: mean [0, 0, 0], std [1, 1, 1]")
    assert f"though the weights expect mean [0.5, 0.5, 0.5], std [0.5, 0.5, 0.5] (timm pretrained_cfg of {HALF})" in line


def test_an_experiment_keeps_its_own_mean_and_std_with_normalize_dataset():
    cfg, line = decided(["dataset=synthetic", "dataset.normalize=dataset", *pretrained(IMAGENET)])
    assert list(cfg.dataset.mean) == [0.0] and list(cfg.dataset.std) == [1.0]  # conf/dataset/synthetic.yaml's
    assert "as configured (dataset.normalize=dataset)" in line and "though the weights expect mean [0.485" in line
    cfg, line = decided(["dataset=synthetic", "dataset.normalize=weights", *pretrained(IMAGENET), "dataset.mean=[0]"])
    assert list(cfg.dataset.mean) == IMAGENET_MEAN  # weights: theirs, whatever the command line says


def test_a_model_from_scratch_keeps_dataset_mean_and_std():
    cfg, line = decided(["dataset=digits"])
    assert line is None and list(cfg.dataset.mean) == [0.3053]
    with pytest.raises(UserError, match=r"^dataset.normalize='weights' .* Fix: dataset.normalize=auto"):
        decided(["dataset=digits", "dataset.normalize=weights"])


def test_the_command_lines_mean_and_std_are_found_however_written():
    overrides = ["dataset.mean=[0]", "++dataset.std=[1]", "dataset=digits", "+dataset.mean_of=1", "model.std=2"]
    assert set_on_command_line(overrides) == ["dataset.mean=[0]", "++dataset.std=[1]"]


# ---- the check ----

def test_pretrained_inputs_passes_the_inputs_the_weights_expect():
    for name in (HALF, IMAGENET):
        result = pretrained_inputs([*STRIPES, *pretrained(name)])
        assert result.verdict == "PASS", (name, result.figure, result.fix)
        assert "mapped back with the weights' mean/std: pixels from [0.0" in result.figure, result.figure


def test_pretrained_inputs_fails_zero_one_inputs_and_names_both_standardizations():
    result = pretrained_inputs([*STRIPES, *pretrained(HALF), *ZERO_ONE])
    assert result.verdict == "FAIL", result.figure
    assert result.fix.startswith("the weights were trained on inputs standardized with mean [0.5, 0.5, 0.5], std "
                                 "[0.5, 0.5, 0.5]; these inputs are 0..1 pixels"), result.fix
    assert "dataset.mean/std are [0.00, 0.00, 0.00]/[1.00, 1.00, 1.00]" in result.fix
    assert "Fix: leave dataset.mean/std to follow the weights: drop dataset.mean=..." in result.fix


class OwnTensors(Dataset):
    """A user's dataset that turns its PIL images into tensors itself: 0..1 pixels, or standardized with
    the data's own per-channel statistics (the config's dataset.mean/std never reach them)."""

    def __init__(self, images: Dataset, standardize: str, mean: torch.Tensor, std: torch.Tensor):
        self.images, self.standardize, self.mean, self.std = images, standardize, mean, std

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image, label = self.images[index]
        pixels = torch.from_numpy(np.array(image.resize((32, 32)), dtype=np.float32) / 255).permute(2, 0, 1)
        return (pixels if self.standardize == "none" else (pixels - self.mean) / self.std), label


def own_tensors(num_classes: int, standardize: str = "own") -> dict:
    """dataset._target_=tests.test_pretrained_inputs.own_tensors: the stripes, as tensors the user made."""
    splits = stripes(num_classes)
    pixels = torch.stack([OwnTensors(splits["train"], "none", None, None)[i][0] for i in range(len(splits["train"]))])
    mean, std = pixels.mean(dim=(0, 2, 3)).view(-1, 1, 1), pixels.std(dim=(0, 2, 3)).view(-1, 1, 1)
    return {split: OwnTensors(images, standardize, mean, std) for split, images in splits.items()}


OWN = ["dataset=custom", "dataset._target_=tests.test_pretrained_inputs.own_tensors", "dataset.num_classes=4",
       "dataset.image_size=[32,32]"]


def test_pretrained_inputs_fails_the_datas_own_statistics_where_the_weights_want_imagenets():
    """The config looks right (dataset.mean/std follow the weights); the user's dataset standardizes by itself."""
    result = pretrained_inputs([*OWN, *pretrained(IMAGENET)])
    assert result.verdict == "FAIL", result.figure
    assert "standardized with other statistics, likely the data's own per-channel ones" in result.fix, result.fix
    assert "mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225]" in result.fix
    assert "dataset.mean/std are" not in result.fix  # the config is not the cause here
    assert "Fix: standardize with those values where your dataset makes its tensors" in result.fix


def test_pretrained_inputs_measures_zero_one_tensors_the_config_cannot_show():
    result = pretrained_inputs([*OWN, "+dataset.standardize=none", *pretrained(IMAGENET)])
    assert result.verdict == "FAIL" and "these inputs are 0..1 pixels" in result.fix, result.fix


def test_pretrained_inputs_passes_a_model_from_scratch_saying_why():
    result = pretrained_inputs(["dataset=digits"])
    assert result.verdict == "PASS" and "no pretrained weights" in result.figure
    assert "pretrained_inputs" in PREFLIGHT


# ---- the commands ----

@pytest.mark.slow
def test_training_the_checks_and_the_evaluation_standardize_as_the_weights_expect(workdir):
    import timm
    from safetensors.torch import save_file

    from runner.common import checkpoint_files
    from runner.evaluation.saved_splits import split_dataset

    weights = workdir / "pretrained.safetensors"
    save_file(timm.create_model(HALF, pretrained=False).state_dict(), str(weights))
    model = ["model=timm", f"model.name={HALF}", f"model.weights_path={weights}"]
    small = ["trainer.epochs=1", "trainer.batch_size=16", "trainer.micro_batch_size=8"]
    run = workdir / "run"
    # (evaluate.trust: runner.models.timm_model is not yet among the evaluator's own builders)
    trained = run_cli([*STRIPES, *model, *small, "evaluate.trust=[runner.models]", f"hydra.run.dir={run}"], cwd=workdir)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    assert f"standardizing with the weights' mean/std (timm pretrained_cfg of {HALF})" in (run / "train.log").read_text()
    config = checkpoint_files.load(run / "checkpoints" / "epoch-0001.pt", parts=("config",))["config"]
    assert config["dataset"]["mean"] == [0.5] * 3 and config["dataset"]["std"] == [0.5] * 3
    _, evaluated_with = split_dataset(config, "val", None)  # the evaluator's data, from the checkpoint's config
    assert list(evaluated_with.mean) == [0.5] * 3
    assert (run / "eval" / "metrics.jsonl").is_file()
    record = json.loads((run / "run.json").read_text())["standardization"]
    assert record["mean"] == [0.5] * 3 and record["weights_expect"]["source"] == f"timm pretrained_cfg of {HALF}"

    checked = run_cli([*STRIPES, *model, *ZERO_ONE, "checks=[pretrained_inputs]"], cwd=workdir, module="runner.check")
    assert checked.returncode == 1, checked.stdout[-3000:] + checked.stderr[-3000:]
    output = checked.stdout + checked.stderr
    assert "standardizing with dataset.mean/std as set on the command line: mean [0, 0, 0], std [1, 1, 1], though " \
           "the weights expect mean [0.5, 0.5, 0.5]" in output, output[-3000:]
    assert "these inputs are 0..1 pixels" in output
