"""A bad setting gets one line naming key, value and fix, exit code 2, no traceback, no run directory.

Each row goes through the entry points' own pre-check (runner/config/precheck.py), which composes the
config as Hydra will and validates it before Hydra creates anything; a few rows go through the
real commands to show that nothing is left on disk.
"""

from __future__ import annotations

import pytest

from runner.config.precheck import refuse_bad_command_line
from runner.config.schema import validate, validate_evaluate_command
from tests.conftest import refused_in_one_line, run_cli

# (command line, what the one line must contain: the key, the value, the fix)
TRAIN = [
    (["+trainer.epoch=3"], ["trainer.epoch", "did you mean trainer.epochs?", "Fix: trainer.epochs=3"]),
    (["trainer.epoch=3"], ["trainer.epoch", "did you mean trainer.epochs?", "Fix: trainer.epochs=3"]),
    (["trainer.compile=maybe"], ["trainer.compile='maybe'", "not a valid bool", "Fix: trainer.compile=false"]),
    (["trainer.epochs=ten"], ["trainer.epochs='ten'", "not a valid integer", "Fix: trainer.epochs=20"]),
    (["trainer.grad_clip_norm=big"], ["trainer.grad_clip_norm='big'", "not a valid float", "Fix:"]),
    # a null default is written as the command line takes it (=None is itself refused)
    (["checkpoint.every_updates=1.5"], ["checkpoint.every_updates='1.5'", "Fix: checkpoint.every_updates=null"]),
    (["dataset.folds=two"], ["dataset.folds='two'", "Fix: dataset.folds=null"]),
    (["trainer.batch_size=100", "trainer.micro_batch_size=32"],
     ["trainer.batch_size=100", "trainer.micro_batch_size=32", "Fix:"]),
    (["trainer.precision=64"], ["trainer.precision='64'", "Fix: trainer.precision=auto"]),
    (["evaluate.metric=accuracy"], ["evaluate.metric='accuracy'", "Fix: evaluate.metric=loss|top1"]),
    (["evaluate.tta=rotate"], ["evaluate.tta='rotate'", "Fix: evaluate.tta=none|flip"]),
    (["checks.only=[nosuch]"], ["checks.only", "nosuch", "Fix: checks=[data,"]),
    (["lr_find.method=middle"], ["lr_find.method='middle'", "Fix: lr_find.method=steepest|valley"]),
    (["model.hiden=3"], ["model.hiden", "did you mean model.hidden?", "Fix: model.hidden=3"]),
    (["+model.hiden=3"], ["model.hiden=3", "not an argument of runner.models.mlp", "Fix: model.hidden"]),
    (["+optimizer.momentum=0.9"], ["optimizer.momentum=0.9", "not an argument of torch.optim.AdamW", "Fix:"]),
    (["optimizer.lr=-1"], ["optimizer.lr=-1", "Fix: optimizer.lr="]),
    (["dataset=nosuch"], ["dataset=nosuch", "Could not find 'dataset/nosuch'", "Fix: dataset=one of cifar10"]),
    (["+dataset.val_size=5"], ["dataset.val_size", "Fix: drop it", "val_fraction"]),
    (["model._target_=no.such.fn"], ["model._target_='no.such.fn'", "cannot be imported", "Fix:"]),
    (["model=linear", "model._target_=tests.byo_models.tiny", "model.width=3"],
     ["model.width", "tests.byo_models.tiny takes it", "Fix: +model.width=3"]),
    (["checks.only=[]"], ["checks.only=[]", "names no check", "Fix: checks=[data,"]),
    (["dataset.image_size=[1,2,3]"], ["dataset.image_size", "[height, width]", "Fix: dataset.image_size="]),
    (["trainer.epochs=[1"], ["cannot be parsed", "Fix:"]),
    # a loss of class indices only (focal gathers by the label), given mixup's class probabilities
    (["loss._target_=tests.byo_losses.focal", "~loss.label_smoothing", "dataset.mixup.alpha=0.2"],
     ["tests.byo_losses.focal cannot take the soft targets", "Fix: accept probability targets"]),
]
EVALUATE = [
    (["run_dir=x", "metric=accuracy"], ["metric='accuracy'", "Fix: metric=loss|top1"]),
    (["run_dir=x", "+metrik=top1"], ["metrik", "Fix:"]),
    (["run_dir=x", "watch=sometimes"], ["watch='sometimes'", "not a valid bool", "Fix: watch=false"]),
]


@pytest.mark.parametrize(("argv", "expected"), TRAIN, ids=[" ".join(a) for a, _ in TRAIN])
def test_a_bad_training_setting_is_one_line(argv, expected, capsys):
    line = refused_in_one_line(argv, capsys)
    for text in expected:
        assert text in line, line


@pytest.mark.parametrize(("argv", "expected"), EVALUATE, ids=[" ".join(a) for a, _ in EVALUATE])
def test_a_bad_evaluator_setting_is_one_line(argv, expected, capsys):
    line = refused_in_one_line(argv, capsys, "evaluate", validate_evaluate_command)
    for text in expected:
        assert text in line, line


def test_good_settings_pass_the_pre_check(capsys):
    refuse_bad_command_line("train", validate, ["trainer.epochs=3", "+experiment=smoke", "model.channels=4"])
    refuse_bad_command_line("train", validate, ["--cfg", "job", "+trainer.epoch=3"])  # Hydra's modes pass through
    assert capsys.readouterr().out == ""


@pytest.mark.slow
@pytest.mark.parametrize(("module", "argv", "expected"), [
    ("runner", ["+trainer.epoch=3"], "did you mean trainer.epochs?"),
    ("runner", ["evaluate.metric=accuracy"], "evaluate.metric='accuracy'"),
    ("runner.evaluate", ["run_dir=x", "metric=accuracy"], "metric='accuracy'"),
    ("runner.check", ["checks=[nosuch]"], "nosuch"),
    ("runner.lr_find", ["lr_find.steps=1"], "lr_find.steps=1"),
    ("runner.inspect_data", ["dataset.subset=0"], "dataset.subset=0"),
])
def test_the_commands_refuse_and_leave_no_run_directory(module, argv, expected, workdir):
    result = run_cli(argv, cwd=workdir, module=module)
    assert result.returncode == 2, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "Traceback" not in output and expected in output and "Fix:" in output
    assert [line for line in output.splitlines() if " ERROR " in line] == [output.strip()]
    assert not (workdir / "outputs").exists(), sorted(p for p in workdir.rglob("*"))


@pytest.mark.slow
def test_a_loss_that_cannot_take_mixed_targets_is_refused_before_the_run_starts(workdir):
    """Checked after the first log line (it imports the loss): exit 2, the cause in one ERROR line, no run folder."""
    run_dir = workdir / "outputs" / "mixed"
    result = run_cli(["loss._target_=tests.byo_losses.focal", "~loss.label_smoothing", "dataset.cutmix.alpha=1.0",
                      f"hydra.run.dir={run_dir}"], cwd=workdir)
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output, output
    errors = [line for line in output.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "focal cannot take the soft targets" in errors[0] and "Fix:" in errors[0]
    assert not run_dir.exists()
