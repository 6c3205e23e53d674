"""Every option of every config group, and every experiment, composes, instantiates and runs one
optimizer update through the real training job (lightning-hydra-template's habit).

The options come from the folders in conf/, so a new yaml is covered the day it lands. Each
run is made tiny and offline: a subset of STEP samples per split, learned in one learning batch
of STEP (one micro-batch), for one epoch: exactly one optimizer update. Datasets that read files
get generated ones (tests/conftest.py); a new option that needs files fails here until it gets
its entry in OFFLINE.
"""

from __future__ import annotations

import os

import pytest
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf

from runner import models
from runner.common import checkpoint_files
from runner.common.runtime import seed_everything
from runner.config.schema import validate, validate_evaluate_command
from runner.run import train_and_evaluate
from tests.conftest import compose_config, make_imagefolder, options

STEP = 8  # samples per split, per learning batch and per micro-batch: one epoch is one update
ONE_UPDATE = [
    "trainer.epochs=1", f"dataset.subset={STEP}", f"trainer.batch_size={STEP}", f"trainer.micro_batch_size={STEP}",
    "checkpoint.every_epochs=1", "evaluate.after_training=false", "trainer.device=cpu",
]
# the data of the model, optimizer and schedule options: 32x32 colour images (the resnets' smallest)
SYNTHETIC = ["dataset=synthetic", "dataset.image_size=[32,32]", "dataset.channels=3"]


def flowers102(request, tmp_path) -> list[str]:
    """Flowers-102 in its own layout (conftest's flowers_root), at 32x32."""
    root = request.getfixturevalue("flowers_root")
    return [f"dataset.root={root}", "dataset.download=false", "dataset.image_size=[32,32]"]


def cifar10(request, tmp_path) -> list[str]:
    """A tiny CIFAR-10 in torchvision's layout (conftest's cifar10_root: 4 images a batch file).

    torchvision checks the md5 sums of the real files (the official batches: no fake can match
    them), so its integrity check is narrowed to "the file exists" for this test; everything
    else (the pickles, the split, the transforms) is torchvision's and the runner's own code.
    """
    import torchvision.datasets.cifar as tv_cifar

    if not hasattr(tv_cifar, "check_integrity"):
        pytest.skip("torchvision.datasets.cifar has no check_integrity to narrow: it checks the md5 sums of "
                    "the official CIFAR-10 files, which a generated folder cannot match")
    request.getfixturevalue("monkeypatch").setattr(tv_cifar, "check_integrity",
                                                   lambda path, md5=None: os.path.isfile(path))
    root = request.getfixturevalue("cifar10_root")
    return [f"dataset.root={root}", "dataset.download=false", "dataset.val_size=4"]  # 20 train images


def imagefolder(request, tmp_path) -> list[str]:
    """Three class folders of five PNGs (seeded split: 12 train, 3 val), at 32x32."""
    root = make_imagefolder(tmp_path / "images", classes=3, per_class=5)
    return [f"dataset.root={root}", "dataset.num_classes=3", "dataset.image_size=[32,32]"]


def custom(request, tmp_path) -> list[str]:
    """The user's own data (tests/byo_data.py): the callable dataset=custom needs."""
    return ["dataset._target_=tests.byo_data.stripes", "dataset.num_classes=4"]


def distill_teacher(request, tmp_path) -> list[str]:
    """loss=distill needs a teacher: one update of the default model on the default data, saved."""
    teacher = tmp_path / "teacher"
    train_and_evaluate(compose_config(ONE_UPDATE), teacher)
    return [f"loss.teachers=[{teacher / 'checkpoints' / checkpoint_files.checkpoint_name(1)}]"]


def flowers_finetune(request, tmp_path) -> list[str]:
    """The fine-tuning experiment's timm model built from scratch (no weights download here), in one stage:
    one epoch leaves no room for a frozen one."""
    return [*flowers102(request, tmp_path), "model.pretrained=false", "finetune.freeze_epochs=0"]


# (group, option) -> overrides that give the option local files instead of a download
OFFLINE = {("dataset", "flowers102"): flowers102, ("dataset", "cifar10"): cifar10,
           ("dataset", "imagefolder"): imagefolder, ("experiment", "flowers"): flowers102, ("dataset", "custom"): custom,
           ("experiment", "flowers_finetune"): flowers_finetune, ("loss", "distill"): distill_teacher}
TRAINED_GROUPS = ("dataset", "model", "optimizer", "schedule", "loss", "experiment")


def cases() -> list:
    # all in the quick suite: the whole file takes about 15 s on 2 CPU cores (resnet50 about 2 s)
    return [pytest.param(group, option, id=f"{group}={option}") for group in TRAINED_GROUPS for option in options(group)]


def initial_model(cfg) -> torch.nn.Module:
    """The model as the job builds it before its first update: seeded by trainer.seed, then built."""
    seed_everything(cfg.trainer.seed, False)
    return models.build(cfg.model)


@pytest.mark.parametrize(("group", "option"), cases())
def test_every_option_composes_instantiates_and_runs_one_update(group, option, request, tmp_path):
    choice = f"+experiment={option}" if group == "experiment" else f"{group}={option}"
    data = SYNTHETIC if group in ("model", "optimizer", "schedule") else []
    offline = OFFLINE[group, option](request, tmp_path) if (group, option) in OFFLINE else []
    cfg = compose_config([*data, choice, *offline, *ONE_UPDATE])

    run_dir = tmp_path / "run"
    train_and_evaluate(cfg, run_dir)

    found = checkpoint_files.list_checkpoints(run_dir / "checkpoints")
    assert [path.name for path in found] == [checkpoint_files.checkpoint_name(1)]
    state = checkpoint_files.load(found[0])
    assert state["epoch"] == 1 and state["global_step"] == 1
    assert state["schedule"]["last_epoch"] == 1  # stepped once, after the one update

    fresh = {name: p.detach() for name, p in initial_model(cfg).named_parameters() if p.requires_grad}
    assert fresh, "the model has no trainable parameters"
    moved = [name for name, p in fresh.items() if not torch.equal(p, state["model"][name])]
    assert moved, "the one update left every trainable parameter as built (a learning rate of 0?)"


# the settings that are not config-group options (issue 26's regularization): each for one update, on image files
# (the uint8 batch finishing) and on the default digits (tensors augmented per sample on the CPU)
SETTINGS = [
    ["trainer.ema.decay=0.9"], ["trainer.swa.start_epoch=1"], ["dataset.mixup.alpha=0.2"], ["dataset.cutmix.alpha=1.0"],
    ["dataset.mixup.alpha=0.2", "dataset.cutmix.alpha=1.0", "dataset.mixup.switch_prob=0.5"],
    ["dataset.auto_augment=trivial"], ["dataset.auto_augment=rand", "dataset.rand_augment.n=3", "dataset.rand_augment.m=12"],
    ["dataset.random_erasing=0.5"], ["model=convnet", "model.drop_rate=0.2", "model.drop_path_rate=0.1"],
    ["evaluate.after_training=true", "evaluate.tta=flip+translate"], ["evaluate.after_training=true", "evaluate.tta=multicrop"],
]


@pytest.mark.parametrize("files", [True, False], ids=["image-files", "digits"])
@pytest.mark.parametrize("settings", SETTINGS, ids=[" ".join(s) for s in SETTINGS])
def test_every_regularization_setting_runs_one_update(settings, files, tmp_path):
    data = [*imagefolder(None, tmp_path), "dataset=imagefolder"] if files else []
    run_dir = tmp_path / "run"
    train_and_evaluate(compose_config([*data, *ONE_UPDATE, *settings]), run_dir)
    state = checkpoint_files.load(run_dir / "checkpoints" / checkpoint_files.checkpoint_name(1))
    assert state["global_step"] == 1
    averaged = {"trainer.ema.decay": "ema", "trainer.swa.start_epoch": "swa"}
    wanted = {averaged[s.split("=")[0]] for s in settings if s.split("=")[0] in averaged}
    assert set(state.get("averaged") or {}) == wanted
    if "evaluate.after_training=true" in settings:
        assert (run_dir / "eval" / "best.json").exists()


@pytest.mark.parametrize("search", options("search"))
def test_every_search_space_composes_with_its_sweeper(search):
    experiment = [f"+experiment={search}"] if search in options("experiment") else []
    cfg = compose_config([*experiment, f"+search={search}"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert get_class(sweeper._target_).__name__.endswith("Sweeper")  # the plugin imports
    assert sweeper.params, f"search={search} searches nothing"
    absent = object()
    for key in sweeper.params:  # each searched setting exists in the config it sweeps
        assert OmegaConf.select(cfg, key, default=absent) is not absent, f"search={search}: no {key} to sweep"


@pytest.mark.parametrize("evaluation", options("evaluation"))
def test_every_evaluation_option_composes_and_validates(evaluation):
    validate(compose_config([f"evaluation@evaluate={evaluation}"]))
    validate_evaluate_command(compose_config([f"evaluation@_global_={evaluation}"], config_name="evaluate"))
