"""Weight averaging in training: `python -m runner trainer.ema.decay=0.999 trainer.swa.start_epoch=3`.

The EMA against its formula applied by hand, the SWA against torch.optim.swa_utils.AveragedModel, the averages in
the checkpoints, bit-identical resumes with each on, the one-line refusals, and the commands that ignore them.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from runner.common import checkpoint_files
from runner.common.errors import UserError
from runner.common.stop_signals import Preempted
from runner.run import train_and_evaluate as train_job
from runner.training import averaging
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

# TINY with every random stream a resume must restore (dropout, augmentation), 3 epochs of 3 updates each
RANDOM_STREAMS = [*TINY, "trainer.deterministic=true", "model.dropout=0.3", "dataset.augment=basic", "trainer.epochs=3"]


def checkpoint(run_dir, epoch: int) -> dict:
    return checkpoint_files.load(run_dir / "checkpoints" / checkpoint_files.checkpoint_name(epoch))


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3))


def sgd_updates(model: nn.Module, count: int, after_each) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    generator = torch.Generator().manual_seed(1)
    for _ in range(count):
        x, y = torch.randn(8, 5, generator=generator), torch.randint(0, 3, (8,), generator=generator)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
        after_each()


@pytest.mark.parametrize("warmup", [True, False])
def test_the_ema_is_the_formula_applied_by_hand_for_10_updates(warmup):
    model = tiny_model()
    ema = averaging.new_ema(model, decay=0.5, warmup=warmup)
    by_hand = {name: p.detach().clone().double() for name, p in model.named_parameters()}
    decays = []

    def after_each():
        updates = len(decays)  # the EMA updates done before this one
        decay = min(0.5, (1 + updates) / (10 + updates)) if warmup else 0.5
        decays.append(decay)
        for name, p in model.named_parameters():
            by_hand[name] = decay * by_hand[name] + (1 - decay) * p.detach().double()
        averaging.update_ema(ema)

    sgd_updates(model, 10, after_each)
    assert ema.updates == 10
    if warmup:
        assert decays[:3] == [0.1, 2 / 11, 3 / 12] and decays[7:] == [8 / 17, 0.5, 0.5]  # 0.5 from the 9th on
    averaged = ema.average.weights
    assert averaged.keys() == model.state_dict().keys()
    for name in by_hand:
        assert averaged[name].dtype == torch.float32
        torch.testing.assert_close(averaged[name].double(), by_hand[name], rtol=0, atol=1e-6)
    assert not averaged["3.weight"].equal(model[3].weight)  # an average, not a copy
    for name, buffer in model.named_buffers():  # BatchNorm's running statistics: copied, not averaged
        assert averaged[name].equal(buffer.float() if buffer.is_floating_point() else buffer), name


def test_the_swa_is_torchs_averaged_model():
    model = tiny_model()
    swa = averaging.new_swa(model, start_epoch=2, every_epochs=1)
    reference = torch.optim.swa_utils.AveragedModel(model)
    for epoch in range(1, 5):
        sgd_updates(model, 3, lambda: None)
        if averaging.swa_due(swa, epoch):
            averaging.update_swa(swa)
            reference.update_parameters(model)
    assert swa.count == 3 and int(reference.n_averaged) == 3
    for name, p in reference.module.named_parameters():
        torch.testing.assert_close(swa.average.weights[name], p.detach(), rtol=0, atol=1e-6)
    for name, buffer in model.named_buffers():  # the last averaged epoch's (the evaluator recomputes BatchNorm's)
        assert swa.average.weights[name].equal(buffer.float() if buffer.is_floating_point() else buffer), name


def test_swa_every_other_epoch_from_epoch_3():
    swa = averaging.new_swa(tiny_model(), start_epoch=3, every_epochs=2)
    assert [epoch for epoch in range(1, 9) if averaging.swa_due(swa, epoch)] == [3, 5, 7]


def test_the_checkpoints_hold_the_ema_beside_the_raw_weights(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        train_job(compose_config([*TINY, "trainer.ema.decay=0.9"]), tmp_path / "run")
    assert "weight averaging: ema (decay 0.9, warmup" in caplog.text
    for epoch in (1, 2):
        state = checkpoint(tmp_path / "run", epoch)
        assert set(state["averaged"]) == {"ema"} and set(state["averaging"]) == {"ema"}
        assert state["averaging"]["ema"] == {"updates": state["global_step"], "decay": 0.9}
        assert state["averaged"]["ema"].keys() == state["model"].keys()
        assert any(not state["averaged"]["ema"][k].equal(v) for k, v in state["model"].items())


def test_without_averaging_the_checkpoint_has_none(tmp_path):
    train_job(compose_config([*TINY, "trainer.epochs=1"]), tmp_path / "run")
    state = checkpoint(tmp_path / "run", 1)
    assert not state.get("averaged") and not state.get("averaging")


def test_the_swa_in_the_checkpoints_is_averaged_models_over_the_epoch_ends(tmp_path):
    """3 epochs, averaged from epoch 2: epoch 1's checkpoint has no swa; epoch 2's is epoch 2's weights; epoch 3's
    the mean of epochs 2 and 3, as AveragedModel makes it from the raw weights of the per-epoch checkpoints."""
    train_job(compose_config([*TINY, "trainer.epochs=3", "trainer.swa.start_epoch=2"]), tmp_path / "run")
    assert "swa" not in checkpoint(tmp_path / "run", 1).get("averaged", {})
    assert checkpoint(tmp_path / "run", 1)["averaging"] == {"swa": {"count": 0}}
    cfg = compose_config(TINY)
    from runner import models

    model = models.build(cfg.model, class_counts=torch.ones(cfg.dataset.num_classes))
    reference = None
    for epoch in (2, 3):
        state = checkpoint(tmp_path / "run", epoch)
        model.load_state_dict(state["model"])
        if reference is None:
            reference = torch.optim.swa_utils.AveragedModel(model)
        reference.update_parameters(model)
        assert state["averaging"]["swa"] == {"count": epoch - 1}
        for name, p in reference.module.named_parameters():
            torch.testing.assert_close(state["averaged"]["swa"][name], p.detach(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("averages", [["trainer.ema.decay=0.8"], ["trainer.swa.start_epoch=1"],
                                      ["trainer.ema.decay=0.8", "trainer.ema.warmup=false", "trainer.swa.start_epoch=2"]],
                         ids=["ema", "swa", "both"])
def test_a_run_stopped_mid_epoch_resumes_with_the_same_raw_and_averaged_weights(averages, tmp_path, monkeypatch):
    cfg = compose_config([*RANDOM_STREAMS, *averages])
    train_job(cfg, tmp_path / "straight")
    with monkeypatch.context() as patch:
        stop_at_step(patch, 3 + 2)  # in epoch 2 (3 updates an epoch)
        with pytest.raises(Preempted):
            train_job(cfg, tmp_path / "resumed")
    stopped = checkpoint_files.load(next((tmp_path / "resumed" / "checkpoints").glob("preempt-step-*.pt")))
    assert stopped["averaged"]  # the averages so far (swa: once an epoch is averaged)
    train_job(cfg, tmp_path / "resumed")
    straight, resumed = checkpoint(tmp_path / "straight", 3), checkpoint(tmp_path / "resumed", 3)
    assert_identical(straight["model"], resumed["model"])
    assert straight["averaged"].keys() == resumed["averaged"].keys() and straight["averaged"]
    for name in straight["averaged"]:
        assert_identical(straight["averaged"][name], resumed["averaged"][name])
    assert straight["averaging"] == resumed["averaging"]


def test_a_run_extended_from_its_last_checkpoint_equals_a_longer_run(tmp_path):
    averages = ["trainer.ema.decay=0.8", "trainer.swa.start_epoch=1"]
    train_job(compose_config([*RANDOM_STREAMS, *averages, "trainer.epochs=2"]), tmp_path / "resumed")
    train_job(compose_config([*RANDOM_STREAMS, *averages]), tmp_path / "resumed")  # continues from epoch 2
    train_job(compose_config([*RANDOM_STREAMS, *averages]), tmp_path / "straight")
    straight, resumed = checkpoint(tmp_path / "straight", 3), checkpoint(tmp_path / "resumed", 3)
    for name in ("ema", "swa"):
        assert_identical(straight["averaged"][name], resumed["averaged"][name])
    assert resumed["averaging"] == {"ema": {"updates": 9, "decay": 0.8}, "swa": {"count": 3}}


def test_changing_the_averaging_on_resume_is_refused(tmp_path):
    train_job(compose_config([*TINY, "trainer.epochs=1"]), tmp_path / "run")
    with pytest.raises(UserError, match=r"different config \(trainer.ema.decay: None -> 0.999\)"):
        train_job(compose_config([*TINY, "trainer.ema.decay=0.999"]), tmp_path / "run")
    with pytest.raises(UserError, match=r"different config \(trainer.swa.start_epoch: None -> 2\)"):
        train_job(compose_config([*TINY, "trainer.swa.start_epoch=2"]), tmp_path / "run")


def test_a_checkpoint_from_before_averaging_existed_is_refused_with_it_on(tmp_path):
    """An older runner wrote no trainer.ema: the setting is 'added', but the run has no average to go on from."""
    train_job(compose_config([*TINY, "trainer.epochs=1"]), tmp_path / "run")
    path = tmp_path / "run" / "checkpoints" / checkpoint_files.checkpoint_name(1)
    state = checkpoint_files.load(path)
    del state["config"]["trainer"]["ema"], state["config"]["trainer"]["swa"]
    checkpoint_files.save_atomic(state, path)
    with pytest.raises(UserError, match=r"has no trainer.ema average .*Fix: trainer.ema.decay=null"):
        train_job(compose_config([*TINY, "trainer.ema.decay=0.9"]), tmp_path / "run")
    train_job(compose_config(TINY), tmp_path / "run")  # without averaging it resumes


BAD = [
    (["trainer.ema.decay=1"], ["trainer.ema.decay=1", "(0, 1)", "Fix: trainer.ema.decay=0.999"]),
    (["trainer.ema.decay=0"], ["trainer.ema.decay=0", "(0, 1)", "Fix:"]),
    (["trainer.ema.decay=-0.5"], ["trainer.ema.decay=-0.5", "Fix:"]),
    (["trainer.ema.decay=1.5"], ["trainer.ema.decay=1.5", "Fix:"]),
    (["trainer.ema.decay=high"], ["trainer.ema.decay='high'", "Fix:"]),
    (["trainer.swa.start_epoch=0"], ["trainer.swa.start_epoch=0", ">= 1", "Fix:"]),
    (["trainer.epochs=5", "trainer.swa.start_epoch=6"],
     ["trainer.swa.start_epoch=6", "trainer.epochs=5", "Fix: trainer.swa.start_epoch=5"]),
    (["trainer.swa.start_epoch=2", "trainer.swa.every_epochs=0"], ["trainer.swa.every_epochs=0", ">= 1", "Fix:"]),
    (["trainer.swa.every_epochs=0"], ["trainer.swa.every_epochs=0", "Fix:"]),
]


@pytest.mark.parametrize(("argv", "expected"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_bad_averaging_setting_is_one_line(argv, expected, capsys):
    line = refused_in_one_line(argv, capsys)
    for text in expected:
        assert text in line, line


def test_the_command_refuses_a_bad_decay_and_writes_nothing(workdir):
    result = run_cli([*TINY, "trainer.ema.decay=1.0"], cwd=workdir)
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "trainer.ema.decay=1.0" in output and "Fix:" in output, output
    assert not (workdir / "outputs").exists()


def test_a_dry_run_with_both_averages_on(workdir):
    result = run_cli([*TINY, "trainer.ema.decay=0.99", "trainer.swa.start_epoch=1", "trainer.dry_run=true",
                      f"hydra.run.dir={workdir / 'run'}"], cwd=workdir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "dry run passed in" in result.stdout and "weight averaging: ema (decay 0.99" in result.stdout


@pytest.mark.slow
def test_lr_find_and_the_checks_ignore_the_averages(workdir):
    averages = ["trainer.ema.decay=0.99", "trainer.swa.start_epoch=1"]
    found = run_cli([*TINY, *averages, "lr_find.steps=20"], cwd=workdir, module="runner.lr_find")
    assert found.returncode == 0, found.stdout[-3000:] + found.stderr[-3000:]
    checked = run_cli([*TINY, *averages, "checks=[loss_at_init,gradients_flow]"], cwd=workdir, module="runner.check")
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
    for name, result in (("lr_find", found), ("check", checked)):  # they say so, once, and average nothing
        output = result.stdout + result.stderr
        assert f"not used by runner.{name} (the training's alone): trainer.ema/trainer.swa" in output, output[-2000:]
        assert "weight averaging:" not in output  # the training's own line: no averages built


def test_the_tools_name_the_training_settings_they_do_not_use():
    from runner.cli.tool_app import training_only_settings

    assert training_only_settings(compose_config(TINY)) == []
    said = training_only_settings(compose_config([*TINY, "trainer.ema.decay=0.9", "dataset.mixup.alpha=0.2",
                                                  "finetune.freeze_epochs=1", "checkpoint.every_updates=5"]))
    assert [line.split(" ")[0] for line in said] == ["trainer.ema/trainer.swa", "dataset.mixup/cutmix",
                                                     "finetune.freeze_epochs",
                                                     "trainer.log_histograms_every/checkpoint.every_updates"]


@pytest.mark.slow
def test_under_torchrun_every_process_averages_alike_and_rank_0_writes(workdir):
    """Two processes hold the same weights after each update (DDP), so each averages them alike: the averages
    equal one process's to float rounding (the gradients are summed in another order)."""
    settings = [*TINY, "trainer.ema.decay=0.8", "trainer.swa.start_epoch=1"]
    one, two = one_and_two_processes(workdir, settings, micro_batch=4)
    single, double = checkpoint(one, 2), checkpoint(two, 2)
    assert single["averaging"] == double["averaging"] == {"ema": {"updates": 6, "decay": 0.8}, "swa": {"count": 2}}
    for name in ("ema", "swa"):
        assert_close_weights(single["averaged"][name], double["averaged"][name])


@pytest.mark.slow
def test_every_cache_and_worker_count_gives_the_same_averages(tmp_path, monkeypatch):
    """The averages follow the weights, which every dataset.cache and trainer.num_workers train alike."""
    from tests.conftest import make_imagefolder

    monkeypatch.setenv("RUNNER_CACHE", str(tmp_path / "cache"))
    root = make_imagefolder(tmp_path / "images", classes=3, per_class=4, size=(20, 24))
    common = ["dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=[16,16]", "dataset.augment=basic",
              "model=convnet", "model.channels=4", "trainer.deterministic=true", "trainer.epochs=2",
              "trainer.batch_size=6", "trainer.micro_batch_size=3", "checkpoint.every_epochs=1",
              "evaluate.after_training=false", "trainer.ema.decay=0.8", "trainer.swa.start_epoch=1"]
    runs = {"none": [], "memory": ["dataset.cache=memory"], "disk": ["dataset.cache=disk", "trainer.num_workers=2"],
            "device": ["dataset.cache=device"]}
    for name, extra in runs.items():
        train_job(compose_config([*common, *extra]), tmp_path / name)
    first = checkpoint(tmp_path / "none", 2)
    for name in runs:
        for average in ("ema", "swa"):
            assert_identical(first["averaged"][average], checkpoint(tmp_path / name, 2)["averaged"][average])


def test_a_dry_run_carries_a_late_swa_across_its_resume(workdir):
    """trainer.swa.start_epoch=8 of 10: the dry run's two epochs would never average; it starts SWA at its first
    epoch, so the resume carries an average (the dry run fails where its resumed checkpoint lacks one)."""
    result = run_cli([*TINY, "trainer.epochs=10", "trainer.swa.start_epoch=8", "trainer.dry_run=true",
                      f"hydra.run.dir={workdir / 'run'}"], cwd=workdir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "dry run passed in" in result.stdout
