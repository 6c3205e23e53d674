"""Staged fine-tuning and discriminative learning rates (runner/training/finetune.py, param_groups.py):
`python -m runner finetune.freeze_epochs=1 finetune.lr_mult=10` or `optimizer.layer_decay=0.75`.

The frozen stage is checked on the weights a real run writes (the body and its BatchNorm statistics bit-unchanged,
the head trained); the learning rates against hand-computed values; resume and torchrun across the unfreeze
against the uninterrupted, single-process run.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from runner import models
from runner.common.errors import UserError
from runner.common.runtime import seed_everything
from runner.common.stop_signals import Preempted
from runner.run import train_and_evaluate as train_job
from runner.training import loop
from runner.training.finetune import set_stage
from runner.training.optim import build_optimizer
from runner.training.param_groups import layer_ids
from tests.conftest import (
    TINY,
    assert_close_weights,
    assert_identical,
    compose_config,
    one_and_two_processes,
    refused_in_one_line,
    run_cli,
    stop_at_step,
)
from tests.conftest import checkpoint_weights as weights


class Block(nn.Module):
    """A residual block: two 3x3 convolutions, each normalized."""

    def __init__(self, channels: int, norm):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), norm(channels)
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), norm(channels)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class SmallResNet(nn.Module):
    """A ResNet in miniature with torchvision's names: conv1 and bn1 (the stem), layer1 (two blocks), fc (the head),
    and dropout before the head (a random stream a resume has to restore)."""

    def __init__(self, num_classes: int, in_channels: int, norm, dropout: float):
        super().__init__()
        self.dropout = dropout
        self.conv1, self.bn1 = nn.Conv2d(in_channels, 8, 3, padding=1, bias=False), norm(8)
        self.layer1 = nn.Sequential(Block(8, norm), Block(8, norm))
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        x = self.layer1(torch.relu(self.bn1(self.conv1(x)))).mean(dim=(2, 3))
        return self.fc(nn.functional.dropout(x, self.dropout, self.training))


def small_resnet(num_classes: int, in_channels: int, image_size, norm: str = "batch", dropout: float = 0.2) -> nn.Module:
    """model._target_=tests.test_finetune.small_resnet (+model.norm=group: GroupNorm, the same under torchrun)."""
    return SmallResNet(num_classes, in_channels, nn.BatchNorm2d if norm == "batch" else lambda c: nn.GroupNorm(2, c),
                       dropout)


FINETUNE = [
    "dataset=synthetic", "dataset.num_classes=5", "dataset.image_size=[8,8]", "dataset.channels=3",
    "dataset.train_size=24", "dataset.val_size=6", "dataset.test_size=6",
    "model=linear", "model._target_=tests.test_finetune.small_resnet",
    "trainer.epochs=2", "trainer.batch_size=12", "trainer.micro_batch_size=6", "trainer.deterministic=true",
    "checkpoint.every_epochs=1", "evaluate.after_training=false", "finetune.freeze_epochs=1",
]
BATCH_NORM_AFFINE = ("bn1.weight", "bn1.bias", "bn2.weight", "bn2.bias")


def initial_weights(cfg) -> dict:
    """The weights the job starts from (it seeds, then builds the model)."""
    seed_everything(cfg.trainer.seed, cfg.trainer.deterministic)
    return {key: value.clone() for key, value in models.build(cfg.model).state_dict().items()}


def record_learning_rates(monkeypatch) -> list[dict]:
    """Each update's learning rate per parameter group, as the update uses it."""
    seen = []
    real = loop.train_step

    def train_step(run, *args, **kwargs):
        seen.append({group["name"]: group["lr"] for group in run.optimizer.param_groups})
        return real(run, *args, **kwargs)
    monkeypatch.setattr(loop, "train_step", train_step)
    return seen


@pytest.mark.parametrize(("optimizer", "train_norm"), [("adamw", False), ("sgd", True)])
def test_a_frozen_epoch_trains_the_head_alone_and_keeps_the_batchnorm_statistics(optimizer, train_norm, tmp_path,
                                                                                monkeypatch, caplog):
    """AdamW and SGD, both with weight decay and momentum: a parameter without a gradient is left bit-unchanged.
    Then the unfreeze: the fastai split's learning rates follow warmup_cosine (1 epoch of warmup, 2 updates an
    epoch: the factors 0.5, 1, then cosine 1, 0.5)."""
    cfg = compose_config([*FINETUNE, f"optimizer={optimizer}", f"finetune.train_norm={train_norm}",
                          "finetune.lr_mult=10", "schedule=warmup_cosine", "schedule.warmup_epochs=1"])
    start = initial_weights(cfg)
    lrs = record_learning_rates(monkeypatch)
    with caplog.at_level(logging.INFO):
        train_job(cfg, tmp_path / "run")
    frozen, unfrozen = weights(tmp_path / "run", 1), weights(tmp_path / "run", 2)

    for key, value in start.items():
        trains = key.startswith("fc.") or (train_norm and key.endswith(BATCH_NORM_AFFINE))
        assert torch.equal(frozen[key], value) != trains, key  # running_mean/var, num_batches_tracked: kept
    for key in ("conv1.weight", "layer1.0.conv1.weight", "bn1.running_mean", "layer1.1.bn2.running_var"):
        assert not torch.equal(unfrozen[key], frozen[key]), key

    lr = cfg.optimizer.lr
    factors = [0.5, 1.0, 1.0, 0.5]
    assert len(lrs) == 4 and set(lrs[0]) == {"head", "head, no weight decay", "body", "body, no weight decay"}
    for update, factor in enumerate(factors):
        for name, value in lrs[update].items():
            expected = lr * factor if name.startswith("head") else lr / 10 * factor
            assert value == pytest.approx(expected, rel=1e-12), (update, name)
    trained = "125 of 2,645 parameters train (the head and the norm layers)" if train_norm else \
        "45 of 2,645 parameters train (the head)"
    assert f"epoch 1: the body frozen (its BatchNorm statistics kept): {trained}" in caplog.text
    assert f"epoch 2: the body unfrozen: 2,645 parameters now train, body lr {lr / 10:g}, head {lr:g}" in caplog.text


def test_norm_and_bias_get_no_weight_decay_unless_asked():
    cfg = compose_config([*FINETUNE, "optimizer=adamw", "optimizer.weight_decay=0.05"])
    model = small_resnet(5, 3, [8, 8])
    names = {id(p): name for name, p in model.named_parameters()}

    def decay_of_each(optimizer) -> dict[str, float]:
        return {names[id(p)]: group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}

    decay = decay_of_each(build_optimizer(cfg.optimizer, model))
    assert {name for name, value in decay.items() if value == 0} == {
        name for name in names.values() if name.endswith(BATCH_NORM_AFFINE) or name == "fc.bias"}
    assert {value for value in decay.values() if value} == {0.05}
    cfg.optimizer.no_decay_norm_and_bias = False
    assert set(decay_of_each(build_optimizer(cfg.optimizer, model)).values()) == {0.05}


def test_a_timm_models_own_no_weight_decay_names_get_none():
    import timm

    cfg = compose_config([*FINETUNE, "optimizer=adamw"])
    model = timm.create_model("test_vit", pretrained=False, num_classes=5)
    optimizer = build_optimizer(cfg.optimizer, model)
    no_decay = {id(p) for group in optimizer.param_groups if group["weight_decay"] == 0 for p in group["params"]}
    named = dict(model.named_parameters())
    assert id(named["pos_embed"]) in no_decay and id(named["cls_token"]) in no_decay
    assert id(named["blocks.0.attn.qkv.weight"]) not in no_decay


def test_layer_decay_orders_a_torchvision_resnet_as_timm_orders_its_own():
    """torchvision's ResNet-18 has timm's parameter names: the stem, 8 blocks, the head (layers 0..9)."""
    import timm
    import torchvision

    ours = layer_ids(torchvision.models.resnet18(num_classes=5))
    timms = layer_ids(timm.create_model("resnet18", pretrained=False, num_classes=5))
    assert ours == timms
    assert (ours["conv1.weight"], ours["bn1.bias"], ours["layer1.0.conv1.weight"], ours["layer2.1.bn2.weight"],
            ours["layer4.1.conv2.weight"], ours["fc.bias"]) == (0, 0, 1, 4, 8, 9)


@pytest.mark.parametrize("lr", [1e-3, 3e-4])
def test_layer_decay_gives_each_layer_its_learning_rate(lr):
    """small_resnet: the stem (layer 0), layer1.0 (1), layer1.1 (2), fc (3): lr x 0.75 ** (3 - layer)."""
    cfg = compose_config([*FINETUNE, "optimizer=adamw", f"optimizer.lr={lr}", "optimizer.layer_decay=0.75"])
    model = small_resnet(5, 3, [8, 8])
    optimizer = build_optimizer(cfg.optimizer, model)
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    hand = {"conv1.weight": lr * 0.75 * 0.75 * 0.75, "bn1.bias": lr * 0.421875, "layer1.0.conv2.weight": lr * 0.5625,
            "layer1.1.bn1.weight": lr * 0.75, "fc.weight": lr, "fc.bias": lr}
    named = dict(model.named_parameters())
    for name, expected in hand.items():
        assert lr_of[id(named[name])] == pytest.approx(expected, rel=1e-12), name
    assert optimizer.param_groups[0]["lr"] == lr  # group 0 is at optimizer.lr: what the log and TensorBoard show


def test_the_stage_freezes_the_body_and_puts_its_batchnorm_in_eval_mode():
    model = small_resnet(5, 3, [8, 8]).train()
    trained = list(model.parameters())
    assert set_stage(model, trained, frozen=True, train_norm=False)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    assert not model.bn1.training and not model.layer1[1].bn2.training and model.training
    assert not set_stage(model, trained, frozen=True, train_norm=False)  # the same stage again: nothing changed
    assert set_stage(model, trained, frozen=False, train_norm=False)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.slow
def test_a_run_stopped_in_the_frozen_stage_or_after_it_resumes_bit_identical(tmp_path, monkeypatch):
    """3 updates an epoch, the body frozen for 1 of 3 epochs; stopped mid-epoch at update 2 (frozen) and at update
    8 (unfrozen), each rerun ends with the uninterrupted run's weights. Dropout and augmentation: random streams."""
    settings = [*FINETUNE, "dataset.train_size=36", "trainer.epochs=3", "dataset.augment=basic",
                "finetune.lr_mult=10", "schedule=cosine"]
    train_job(compose_config(settings), tmp_path / "straight")
    for step in (2, 8):
        with monkeypatch.context() as patch:
            stop_at_step(patch, step)
            with pytest.raises(Preempted):
                train_job(compose_config(settings), tmp_path / f"stopped-{step}")
        train_job(compose_config(settings), tmp_path / f"stopped-{step}")
        assert_identical(weights(tmp_path / "straight", 3), weights(tmp_path / f"stopped-{step}", 3))


@pytest.mark.slow
def test_two_processes_across_the_unfreeze_reach_the_weights_of_one(workdir):
    """DDP registers the parameters that train when it is built: it is built again at the unfreeze. GroupNorm, so
    half micro-batches normalize as whole ones; no dropout, whose draws differ between one process and two."""
    settings = [*FINETUNE, "+model.norm=group", "+model.dropout=0", "finetune.lr_mult=10"]
    one, two = one_and_two_processes(workdir, settings, micro_batch=6)
    assert "the body unfrozen" in (two / "train.log").read_text()
    assert_close_weights(weights(one, 2), weights(two, 2))


BAD = [
    (["finetune.freeze_epochs=20"], ["finetune.freeze_epochs=20", "trainer.epochs=20",
                                     "Fix: finetune.freeze_epochs=19 or fewer, or trainer.epochs=21"]),
    (["finetune.freeze_epochs=-1"], ["finetune.freeze_epochs=-1", "Fix: finetune.freeze_epochs=0"]),
    (["optimizer.layer_decay=0"], ["optimizer.layer_decay=0", "(0, 1]", "Fix: optimizer.layer_decay=0.75"]),
    (["optimizer.layer_decay=1.5"], ["optimizer.layer_decay=1.5", "Fix: optimizer.layer_decay=0.75"]),
    (["finetune.lr_mult=0.5"], ["finetune.lr_mult=0.5", ">= 1", "Fix: finetune.lr_mult=10"]),
    (["finetune.lr_mult=10", "optimizer.layer_decay=0.75"],
     ["finetune.lr_mult=10", "optimizer.layer_decay=0.75", "pick one", "Fix: finetune.lr_mult=1 or optimizer.layer_decay=null"]),
    (["model=resnet18", "model.freeze=backbone", "finetune.freeze_epochs=2"],
     ["finetune.freeze_epochs=2", "model.freeze=backbone", "Fix: model.freeze=none"]),
    (["optimizer.no_decay_norm_and_bias=maybe"], ["optimizer.no_decay_norm_and_bias='maybe'", "Fix: "]),
]


@pytest.mark.parametrize(("argv", "expected"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_bad_finetune_setting_is_one_line(argv, expected, capsys):
    line = refused_in_one_line(argv, capsys)
    for text in expected:
        assert text in line, line


def test_the_command_refuses_a_frozen_stage_as_long_as_the_run_and_writes_nothing(workdir):
    result = run_cli(["trainer.epochs=3", "finetune.freeze_epochs=3"], cwd=workdir)
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr
    assert "finetune.freeze_epochs=3" in result.stdout + result.stderr
    assert not (workdir / "outputs").exists()


def test_a_checkpoint_with_other_parameter_groups_is_refused_in_one_line(tmp_path):
    """A checkpoint written before norm and bias lost their weight decay has one group where runner now makes two."""
    from runner.common import checkpoint_files

    train_job(compose_config([*TINY, "trainer.epochs=1", "optimizer.no_decay_norm_and_bias=false"]), tmp_path / "run")
    path = tmp_path / "run" / "checkpoints" / checkpoint_files.checkpoint_name(1)
    state = checkpoint_files.load(path)
    del state["config"]["optimizer"]["no_decay_norm_and_bias"]  # as an older runner wrote it
    checkpoint_files.save_atomic(state, path)
    with pytest.raises(UserError, match=r"1 parameter group.*makes 2.*Fix: optimizer.no_decay_norm_and_bias=false"):
        train_job(compose_config(TINY), tmp_path / "run")


@pytest.mark.slow
def test_the_dry_run_of_a_staged_fine_tuning_passes(tmp_path, monkeypatch):
    """Its two one-epoch jobs cannot keep a frozen stage that the first would end in (freeze_epochs >= epochs)."""
    from runner.dry_run import dry_run

    monkeypatch.chdir(tmp_path)
    result = dry_run(compose_config([*FINETUNE, "trainer.epochs=4", "finetune.freeze_epochs=2"]))
    assert result["best"] is not None


@pytest.mark.parametrize("name", ["test_convnext", "test_vit"])
def test_layer_decay_of_a_timm_model_by_name_is_timms_own(name):
    """model=timm: every parameter's lr and weight decay as timm.optim.param_groups_layer_decay gives them."""
    from timm.optim import param_groups_layer_decay

    cfg = compose_config(["dataset=synthetic", "dataset.num_classes=5", "model=timm", f"model.name={name}",
                          "optimizer=adamw", "optimizer.lr=0.001", "optimizer.layer_decay=0.75"])
    model = models.build(cfg.model)
    ours = {id(p): (group["lr"], group.get("weight_decay", 0.01))
            for group in build_optimizer(cfg.optimizer, model).param_groups for p in group["params"]}
    own = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    timms = {id(p): (0.001 * group["lr_scale"], group["weight_decay"])
             for group in param_groups_layer_decay(model, 0.01, own, layer_decay=0.75)
             for p in group["params"]}
    assert ours.keys() == timms.keys()
    for key, (lr, decay) in timms.items():
        assert ours[key][0] == pytest.approx(lr, rel=1e-12) and ours[key][1] == decay


def test_each_parts_learning_rate_is_in_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_job(compose_config([*FINETUNE, "finetune.lr_mult=10", "trainer.log_every_steps=1"]), tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    head, body = ([e.value for e in events.Scalars(f"train/lr/{part}")] for part in ("head", "body"))
    assert len(head) == len(body) == 4 and head == pytest.approx([10 * lr for lr in body], rel=1e-6)


def test_a_run_resumed_after_its_frozen_stage_says_which_stage_it_is_in(tmp_path, caplog):
    """Found by an adversarial tester: a rerun from epoch 1's checkpoint never logged the stage (the parameters it
    built were already all trainable: nothing changed, so nothing was said)."""
    cfg = compose_config([*FINETUNE, "trainer.epochs=3"])
    train_job(cfg, tmp_path / "run")
    for later in ("epoch-0002.pt", "epoch-0003.pt"):
        (tmp_path / "run" / "checkpoints" / later).unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="runner.training.finetune"):
        train_job(cfg, tmp_path / "run")
    assert "epoch 2: the body unfrozen" in caplog.text, caplog.text
