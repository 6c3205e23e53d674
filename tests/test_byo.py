"""Your own data (and model) through every tool: `dataset=custom dataset._target_=tests.byo_data.stripes`."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from runner.common.errors import UserError
from runner.config.schema import validate
from runner.data import datasets, introspect
from runner.run import train_and_evaluate as train_job
from tests.conftest import (
    assert_close_weights,
    assert_identical,
    compose_config,
    one_and_two_processes,
    run_cli,
)
from tests.conftest import checkpoint_weights as weights

STRIPES = ["dataset=custom", "dataset._target_=tests.byo_data.stripes", "dataset.num_classes=4",
           "dataset.image_size=[12,12]", "trainer.epochs=2", "trainer.batch_size=16", "trainer.micro_batch_size=8",
           "checkpoint.every_epochs=1"]


def test_the_callable_gets_the_keys_its_signature_names_and_its_splits_are_prepared():
    cfg = compose_config([*STRIPES, "+dataset.train_size=40", "dataset.augment=basic"])
    validate(cfg)
    splits = datasets.build_splits(cfg.dataset)
    assert [len(splits[s]) for s in datasets.SPLITS] == [40, 48, 0]  # no test split: an empty one
    image, label = splits["train"][0]
    assert image.shape == (3, 12, 12) and image.dtype == torch.float32 and isinstance(label, int)
    assert introspect.labels_of(splits["val"]).tolist() == [splits["val"][i][1] for i in range(48)]
    assert len(datasets.build_splits(compose_config([*STRIPES, "dataset.subset=20"]).dataset)["train"]) == 20


def test_ready_tensors_are_used_as_they_are():
    cfg = compose_config(["dataset=custom", "dataset._target_=tests.byo_data.tensors", "dataset.num_classes=4",
                          "dataset.image_size=[8,8]"])  # the shape the model is built for: the tensors' own
    splits = datasets.build_splits(cfg.dataset)
    from tests.byo_data import tensors

    assert torch.equal(splits["test"][3][0], tensors(4)["test"][3][0])


@pytest.mark.parametrize(("target", "said"), [
    ("not_splits", r"tests.byo_data.not_splits returned a list. Fix: return a mapping \{\"train\""),
    ("no_val", r"tests.byo_data.no_val returned a dict with keys \['train'\]. Fix: return a mapping"),
    ("wrong_items", r"returned a train split whose item 0 is a ndarray, not an \(image, label\) pair. Fix: return"),
])
def test_a_wrong_return_is_one_line_naming_what_came_back_and_what_is_expected(target, said):
    cfg = compose_config(["dataset=custom", f"dataset._target_=tests.byo_data.{target}", "dataset.num_classes=4"])
    with pytest.raises(UserError, match=said):
        datasets.build_splits(cfg.dataset)


def test_tensors_of_the_wrong_channels_are_named():
    cfg = compose_config(["dataset=custom", "dataset._target_=tests.byo_data.tensors", "dataset.num_classes=4",
                          "dataset.channels=1"])
    with pytest.raises(UserError, match=r"image 0 is a 3x8x8 tensor, but the model is built for 1x32x32 .* "
                                        r"Fix: dataset.channels=3 dataset.image_size=\[8,8\]"):
        datasets.build_splits(cfg.dataset)


@pytest.mark.parametrize(("overrides", "said"), [
    (["+dataset.train_sise=40"], r"dataset.train_sise=40 is not an argument of tests.byo_data.stripes. "
                                 r"Fix: dataset.train_size=40"),
    (["+dataset.subst=20"], r"dataset.subst=20 is not an argument .* Fix: dataset.subset=20"),
    (["dataset._target_=tests.byo_data.nothing"], r"dataset._target_='tests.byo_data.nothing' cannot be imported"),
])
def test_keys_the_callable_does_not_take_are_refused_by_name(overrides, said):
    with pytest.raises(UserError, match=said):
        validate(compose_config([*STRIPES, *overrides]))


def test_without_a_target_the_message_says_which_key(tmp_path):
    result = run_cli(["dataset=custom", "dataset.num_classes=4"], cwd=tmp_path)
    assert result.returncode == 2 and "dataset._target_ has no value" in result.stdout + result.stderr


def test_custom_data_resumes_exactly(tmp_path):
    two = compose_config([*STRIPES, "dataset.augment=basic", "trainer.deterministic=true"])
    four = compose_config([*STRIPES, "dataset.augment=basic", "trainer.deterministic=true", "trainer.epochs=4"])
    train_job(two, tmp_path / "resumed")
    train_job(four, tmp_path / "resumed")
    train_job(four, tmp_path / "straight")
    assert_identical(weights(tmp_path / "straight", 4), weights(tmp_path / "resumed", 4))


@pytest.mark.slow
def test_custom_data_and_model_through_every_tool(tmp_path):
    own = [*STRIPES, "model=linear", "model._target_=tests.byo_models.tiny", "+model.width=8"]
    trained = run_cli([*own, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert trained.returncode == 0, trained.stdout[-2000:]
    assert json.loads((tmp_path / "run" / "eval" / "best.json").read_text())["metrics"]["n"] == 48

    first = tmp_path / "copied.pt"  # outside its run folder: nothing evaluated before, it must be built
    shutil.copy(tmp_path / "run" / "checkpoints" / "epoch-0001.pt", first)
    refused = run_cli([f"checkpoint={first}"], cwd=tmp_path, module="runner.evaluate")
    assert refused.returncode == 2, refused.stdout[-2000:]
    said = refused.stdout
    assert "model._target_='tests.byo_models.tiny' and dataset._target_='tests.byo_data.stripes', which are not" in said
    assert "Fix: if you trust this checkpoint and its code, trust=[tests.byo_models,tests.byo_data]" in said
    trusted = run_cli([f"checkpoint={first}", "trust=[tests.byo_models,tests.byo_data]"], cwd=tmp_path,
                      module="runner.evaluate")
    assert trusted.returncode == 0, trusted.stdout[-2000:]

    for module, extra in [("runner.check", ["checks=[data,loss_at_init,overfit_batch]"]),
                          ("runner.inspect_data", []), ("runner.lr_find", ["lr_find.steps=20"])]:
        result = run_cli([*own, *extra], cwd=tmp_path, module=module)
        assert result.returncode in (0, 1), (module, result.stdout[-2000:])  # 1: a check's verdict, not a crash
        assert "Traceback" not in result.stdout + result.stderr, module

    sweep = run_cli(["-m", *own, "hydra/sweeper=runner_optuna", "hydra.sweeper.n_trials=2",
                     "optimizer.lr=tag(log, interval(1e-3, 1e-2))", f"hydra.sweeper.sweep_dir={tmp_path / 'sweep'}",
                     "evaluate.galleries=false"], cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stdout[-2000:]
    assert len((tmp_path / "sweep" / "trials.csv").read_text().splitlines()) == 3


@pytest.mark.slow
def test_custom_data_with_two_processes_reaches_the_weights_of_one(tmp_path):
    # plain SGD: Adam divides by the root of tiny second moments, so it magnifies float rounding of the sum
    common = [*STRIPES, "trainer.deterministic=true", "evaluate.after_training=false", "optimizer=sgd", "optimizer.lr=0.05"]
    one, two = one_and_two_processes(tmp_path, common, micro_batch=8)
    assert_close_weights(weights(one, 2), weights(two, 2))


# ---------------------------------------------------------------------------------------------
# your own loss: loss._target_=tests.byo_losses.focal

FOCAL = ["loss._target_=tests.byo_losses.focal", "~loss.label_smoothing"]


def test_the_loop_trains_with_the_configured_loss(tmp_path):
    """Focal loss with gamma=0 is cross-entropy: the same weights; gamma=2 moves them elsewhere."""
    from tests.conftest import TINY

    train_job(compose_config(TINY), tmp_path / "cross_entropy")
    train_job(compose_config([*TINY, *FOCAL, "+loss.gamma=0"]), tmp_path / "focal0")
    train_job(compose_config([*TINY, *FOCAL, "+loss.gamma=2"]), tmp_path / "focal2")
    reference = weights(tmp_path / "cross_entropy", 2)
    for key, value in weights(tmp_path / "focal0", 2).items():
        torch.testing.assert_close(value, reference[key], rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(v, reference[k]) for k, v in weights(tmp_path / "focal2", 2).items())


def test_a_loss_that_returns_the_mean_accumulates_exactly(tmp_path):
    from tests.conftest import TINY

    mean = [*TINY, "loss._target_=tests.byo_losses.mean_cross_entropy", "~loss.label_smoothing"]
    train_job(compose_config([*mean, "trainer.micro_batch_size=12"]), tmp_path / "whole")
    train_job(compose_config([*mean, "trainer.micro_batch_size=4"]), tmp_path / "micro")
    for key, value in weights(tmp_path / "micro", 2).items():
        torch.testing.assert_close(value, weights(tmp_path / "whole", 2)[key], rtol=1e-5, atol=1e-6)


def test_a_loss_of_the_wrong_shape_is_one_line(tmp_path):
    from tests.conftest import TINY

    cfg = compose_config([*TINY, "loss._target_=tests.byo_losses.per_class", "~loss.label_smoothing"])
    with pytest.raises(UserError, match=r"the loss per_class returned a tensor of shape \(4, 7\) for 4 samples. "
                                        r"Fix: return the per-sample losses, shape \(4,\), or their mean"):
        train_job(cfg, tmp_path / "run")


@pytest.mark.parametrize(("overrides", "said"), [
    ([*FOCAL, "+loss.gama=2"], r"loss.gama=2 is not an argument of tests.byo_losses.focal. Fix: loss.gamma=2"),
    (["loss._target_=tests.byo_losses.focal"], r"loss.label_smoothing=0.0 is not an argument of "
                                               r"tests.byo_losses.focal. Fix: ~loss.label_smoothing \(drop it\)"),
    (["loss.label_smoothing=1.5"], r"loss.label_smoothing=1.5 must be in \[0, 1\)"),
])
def test_loss_settings_are_checked_against_the_callable(overrides, said):
    with pytest.raises(UserError, match=said):
        validate(compose_config(overrides))
