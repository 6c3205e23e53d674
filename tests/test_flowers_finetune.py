"""The fine-tuning experiment through the other tools: runner.check and runner.lr_find on its recipe (the
weights from a file the test makes: nothing downloads here), and a sweep that searches the fine-tuning
settings (finetune.*, optimizer.layer_decay)."""

from __future__ import annotations

import json

import pytest
import timm
from safetensors.torch import save_file

from tests.conftest import run_cli
from tests.test_sweep import load, sweep_args

pytestmark = pytest.mark.slow


def recipe(flowers_root, weights) -> list[str]:
    """+experiment=flowers_finetune on the flowers fixture, with a tiny timm model of the same family from a file."""
    return ["+experiment=flowers_finetune", f"dataset.root={flowers_root}", "dataset.download=false",
            "dataset.image_size=[32,32]", "trainer.num_workers=0",
            "model.name=test_resnet", "model.pretrained=false", f"model.weights_path={weights}"]


def test_check_and_lr_find_work_on_the_fine_tuning_recipe(workdir, flowers_root):
    weights = workdir / "test_resnet.safetensors"
    save_file(timm.create_model("test_resnet").state_dict(), str(weights))
    checked = run_cli(["checks.overfit_steps=60", "checks.baseline_steps=20", "checks.augmentation_steps=20",
                       "checks.augmentation_samples=64", *recipe(flowers_root, weights)],
                      module="runner.check", cwd=workdir, timeout=900)
    assert "Traceback" not in checked.stderr, checked.stderr[-3000:]
    rows = {row["check"]: row for row in json.loads(next((workdir / "outputs").rglob("checks.json")).read_text())}
    assert rows["pretrained_inputs"]["verdict"] == "PASS", rows["pretrained_inputs"]
    assert rows["dry_run"]["verdict"] == "PASS", (rows["dry_run"]["figure"], rows["dry_run"]["fix"])  # its one epoch trains unfrozen
    found = run_cli(["lr_find.steps=20", *recipe(flowers_root, weights)], module="runner.lr_find", cwd=workdir,
                    timeout=600)
    assert found.returncode == 0, found.stdout[-2000:] + found.stderr[-2000:]
    assert "suggested" in found.stdout and "optimizer.lr=" in found.stdout


def test_a_sweep_searches_the_frozen_stage_and_the_layer_decay(workdir):
    sweep_dir = workdir / "sweep"
    result = run_cli(sweep_args(sweep_dir, "hydra.sweeper.n_trials=3", "trainer.epochs=2",
                                "finetune.freeze_epochs=choice(0, 1)", "optimizer.layer_decay=interval(0.5, 1.0)"),
                     cwd=workdir, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trials = load(sweep_dir).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert {t.params["finetune.freeze_epochs"] for t in trials} <= {0, 1}
    assert all(0.5 <= t.params["optimizer.layer_decay"] <= 1.0 for t in trials)
