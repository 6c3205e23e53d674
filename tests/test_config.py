"""Every config option composes, instantiates and validates; bad values get one clear line."""

from __future__ import annotations

import ast
from dataclasses import is_dataclass

import pytest
import torch

from runner import models
from runner.common import checkpoint_files
from runner.common.errors import UserError
from runner.config.schema import validate
from runner.training.optim import build_optimizer, build_schedule
from tests.conftest import CONF, PROJECT, TINY, compose_config, options


@pytest.mark.parametrize("model", options("model"))
def test_every_model_instantiates_and_predicts(model):
    cfg = compose_config(["dataset=synthetic", "dataset.num_classes=7", "dataset.image_size=[32,32]",
                          f"model={model}"])
    validate(cfg)
    net = models.build(cfg.model)
    logits = net(torch.randn(3, 3, 32, 32))
    assert logits.shape == (3, 7)


@pytest.mark.parametrize("optimizer", options("optimizer"))
@pytest.mark.parametrize("schedule", options("schedule"))
def test_every_optimizer_and_schedule_instantiates(optimizer, schedule):
    cfg = compose_config([f"optimizer={optimizer}", f"schedule={schedule}"])
    validate(cfg)
    net = models.build(cfg.model)
    opt = build_optimizer(cfg.optimizer, net)
    sched = build_schedule(cfg.schedule, opt, updates_per_epoch=5, total_epochs=cfg.trainer.epochs)
    assert isinstance(opt, torch.optim.Optimizer)
    lrs = []
    for _ in range(5 * cfg.trainer.epochs):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert all(0 <= lr <= cfg.optimizer.lr * 1.000001 for lr in lrs)


@pytest.mark.parametrize("dataset", options("dataset"))
def test_every_dataset_composes(dataset, tmp_path):
    overrides = [f"dataset={dataset}"]
    if dataset == "imagefolder":
        overrides += [f"dataset.root={tmp_path}", "dataset.num_classes=3"]
    if dataset == "custom":
        overrides += ["dataset._target_=tests.byo_data.stripes", "dataset.num_classes=4"]
    cfg = compose_config(overrides)
    validate(cfg)
    assert cfg.model.num_classes == cfg.dataset.num_classes


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(experiment):
    cfg = compose_config([f"+experiment={experiment}"])
    validate(cfg)
    models.build(models.without_pretrained_weights(cfg.model))  # no download here: the architecture builds


def test_flowers_experiment_is_the_flagship():
    cfg = compose_config(["+experiment=flowers"])
    assert cfg.dataset.name == "flowers102" and cfg.dataset.num_classes == 102
    assert list(cfg.dataset.image_size) == [128, 128]
    assert cfg.model._target_ == "runner.models.convnet"
    assert cfg.model.channels == 32 and cfg.model.n_blocks == 4
    assert cfg.optimizer._target_ == "torch.optim.AdamW" and cfg.optimizer.lr == 0.005
    assert cfg.trainer.batch_size == 256 and cfg.trainer.batch_size > cfg.trainer.micro_batch_size
    assert cfg.trainer.epochs == 100 and cfg.checkpoint.every_epochs == 10


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("optimizer.lr=-0.1", ["optimizer.lr=-0.1", "Fix:"]),
        ("trainer.micro_batch_size=5", ["trainer.batch_size=64", "micro_batch_size=5", "divisor"]),
        ("trainer.precision=fp8", ["trainer.precision='fp8'", "bf16"]),
        ("model.num_classes=5", ["model.num_classes=5", "dataset.num_classes=10"]),
        ("model._target_=runner.models.nonexistent", ["model._target_", "cannot be imported"]),
        ("trainer.epochs=0", ["trainer.epochs=0", "integer >= 1"]),
        ("dataset.subset=-3", ["dataset.subset=-3"]),
        ("trainer.device=tpu", ["trainer.device='tpu'"]),
        ("resume=/no/such/file.pt", ["resume='/no/such/file.pt'", "is not a file"]),
        ("dataset.mean=[0.1,0.2]", ["dataset.mean", "1 or 1 values"]),
        ("trainer.stop_signals=[SIGUSR7]", ["trainer.stop_signals", "SIGUSR7"]),
    ],
)
def test_bad_values_get_one_line_naming_key_and_fix(override, names):
    cfg = compose_config([override])
    with pytest.raises(UserError) as caught:
        validate(cfg)
    message = str(caught.value)
    assert "\n" not in message
    for name in names:
        assert name in message, message


def test_imagefolder_root_must_exist(tmp_path):
    cfg = compose_config(["dataset=imagefolder", f"dataset.root={tmp_path / 'missing'}", "dataset.num_classes=3"])
    with pytest.raises(UserError, match=r"dataset.root=.*missing.*is not a folder"):
        validate(cfg)


def test_missing_mandatory_value_is_named():
    cfg = compose_config(["dataset=imagefolder"])
    with pytest.raises(UserError, match="has no value"):
        validate(cfg)


@pytest.mark.parametrize(("launcher", "target"), [("slurm", "SlurmLauncher"), ("local", "LocalLauncher")])
def test_submitit_launcher_configs_compose(launcher, target):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)
    assert cfg.hydra.launcher.timeout_min == 1440


def test_a_users_own_model_with_its_own_arguments_composes_validates_and_trains(tmp_path):
    """`_target_` groups stay open: a callable runner has never seen, with an argument of its own."""
    from runner.run import train_and_evaluate

    cfg = compose_config([*TINY, "trainer.epochs=1", "model=linear", "model._target_=tests.byo_models.tiny",
                          "+model.width=3"])
    validate(cfg)
    train_and_evaluate(cfg, tmp_path / "run")
    weights = checkpoint_files.load(tmp_path / "run" / "checkpoints" / checkpoint_files.checkpoint_name(1))["model"]
    assert weights["1.weight"].shape == (3, 3 * 11 * 13) and weights["3.weight"].shape == (7, 3)


def test_an_argument_the_users_model_does_not_take_is_refused():
    cfg = compose_config(["model._target_=tests.byo_models.tiny"])  # mlp's hidden, depth, dropout stay
    with pytest.raises(UserError, match=r"model.hidden=256 is not an argument of tests.byo_models.tiny. "
                                        r"Fix: ~model.hidden \(drop it\); tests.byo_models.tiny takes .*width"):
        validate(cfg)


SETTINGS_MODULES = ["runner/training/settings.py", "runner/data/settings.py", "runner/evaluation/settings.py",
                    "runner/checks/settings.py", "runner/config/schema.py",
                    "runner/training/checkpoint_settings.py"]


@pytest.mark.parametrize("path", SETTINGS_MODULES)
def test_every_schema_field_has_a_docstring(path):
    """The schemas are the settings' documentation: each field is followed by its docstring line."""
    import importlib

    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    tree = ast.parse((PROJECT / path).read_text())
    schemas = [node for node in tree.body if isinstance(node, ast.ClassDef)
               and is_dataclass(getattr(module, node.name, None))]
    assert schemas, path
    for schema in schemas:
        body = schema.body
        for index, statement in enumerate(body):
            if isinstance(statement, ast.AnnAssign):
                following = body[index + 1] if index + 1 < len(body) else None
                documented = (isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                              and isinstance(following.value.value, str))
                assert documented, f"{path}: {schema.name}.{statement.target.id} has no docstring"
