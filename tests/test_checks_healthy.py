"""The healthy matrix (issue #12): stock models on real and synthetic data, several seeds, every check
including the dry run. Healthy setups on balanced, standardized data get no FAIL and no WARN (a WARN
here would have to be a property of the data, and these data have none)."""

from __future__ import annotations

import pytest
import torch

from runner.checks.registry import CHECKS, run
from runner.checks.setup import setup_for
from runner.dry_run import dry_run_check
from tests.conftest import compose_config

ROWS = {
    **{f"{model}-digits": ["model=" + model] for model in ("mlp", "lenet", "convnet", "resnet18")},
    **{f"{model}-synthetic-seed{seed}": ["dataset=synthetic", "model=" + model, f"trainer.seed={seed}"]
       for model in ("mlp", "convnet") for seed in (0, 1)},
}


# issue 23: stock and plain models that got a false FAIL (model=linear: 'capped logits'; a plain small CNN: no
# gain from the inputs in 50 steps), and conv-BN-ReLU-Dropout(0.5) in the usual order; two seeds each. A fit still
# falling steadily at the end of its second budget is a WARN ('more steps'), so these rows may WARN, never FAIL.
PLAIN = "model._target_=tests.byo_check_models."
NO_FAIL_ROWS = {
    **{f"linear-digits-seed{seed}": ["model=linear", f"trainer.seed={seed}"] for seed in (0, 1)},
    **{f"{name}-digits-seed{seed}": ["model=linear", PLAIN + name, f"trainer.seed={seed}"]
       for name in ("small_cnn", "conv_bn_relu_dropout") for seed in (0, 1)},
}


def all_checks(overrides: list[str]) -> list:
    setup = setup_for(compose_config(overrides), torch.device("cpu"))
    results = run(setup, [*CHECKS, "dry_run"], {"dry_run": dry_run_check})
    assert len(results) == len(CHECKS) + 1
    return results


def assert_healthy(overrides: list[str]) -> None:
    unexpected = [(r.check, r.verdict, r.figure, r.fix) for r in all_checks(overrides) if r.verdict != "PASS"]
    assert not unexpected, unexpected


@pytest.mark.slow
@pytest.mark.parametrize("row", ROWS)
def test_a_healthy_setup_gets_no_fail_and_no_unexplained_warning(row):
    assert_healthy(ROWS[row])


@pytest.mark.slow
@pytest.mark.parametrize("row", NO_FAIL_ROWS)
def test_a_plain_model_gets_no_fail(row):
    results = all_checks(NO_FAIL_ROWS[row])
    failed = [(r.check, r.figure, r.fix) for r in results if r.verdict == "FAIL"]
    assert not failed, failed
    fit = next(r for r in results if r.check == "overfit_batch")
    assert fit.verdict == "PASS" or "more steps" in fit.fix, (fit.figure, fit.fix)


@pytest.mark.slow
def test_the_flowers_experiment_on_its_fixture_is_healthy(flowers_root):
    assert_healthy(["+experiment=flowers", f"dataset.root={flowers_root}", "dataset.download=false",
                    "dataset.image_size=64", "checks.overfit_steps=150"])
