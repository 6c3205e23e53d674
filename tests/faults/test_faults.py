"""The standing fault-injection suite (pytest -m faults): what a hostile or unlucky user does to a run.

Each scenario goes through the real training job or command on tiny configs, and checks the
promise the README's "What survives what" table makes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest
import torch

from runner.checks.settings import ChecksSettings, LrFindSettings
from runner.cli.evaluate import evaluate
from runner.common import checkpoint_files
from runner.common.errors import UserError
from runner.config.precheck import refuse_bad_command_line
from runner.config.schema import validate, validate_evaluate_command
from runner.evaluation.settings import EvaluateCommand, TrainingEvaluation
from runner.run import train_and_evaluate
from runner.training.settings import CheckpointSettings, TrainerSettings
from tests.conftest import (
    BAD_IMAGES,
    INTERRUPTIBLE,
    ODD_IMAGES,
    STOPPABLE,
    TINY,
    assert_identical,
    checkpoint_weights,
    cli_env,
    compose_config,
    make_bad_image,
    make_imagefolder,
    run_cli,
)
from tests.test_trust import crafted_models, payload

pytestmark = pytest.mark.faults

# deterministic, with dropout and augmentation; checkpoints every epoch, evaluated after training
KILLABLE = [*(s.replace("train_size=3000", "train_size=1500") for s in INTERRUPTIBLE), "trainer.epochs=3",
            "evaluate.galleries=true"]
DETERMINISTIC_TINY = [*TINY, "trainer.deterministic=true", "model.dropout=0.3", "dataset.augment=basic"]


def temporaries(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob("*") if ".tmp-" in p.name]


def run_command(run_dir: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runner", *KILLABLE, f"hydra.run.dir={run_dir}"], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cli_env())


def test_kill_9_at_random_moments_then_rerun_ends_bit_identical_with_no_temporary_file(tmp_path):
    """SIGKILL at 7 seeded moments: in start-up and the first epoch, between checkpoints, in the evaluation and figures
    (20 two waves ago, then 10; fewer to keep CI near 25 minutes: each moment costs a killed run and its rerun)."""
    straight = tmp_path / "straight"
    started = time.time()
    process = run_command(straight, tmp_path)
    locked = None  # when the job took its run lock: Python, torch and Hydra's start-up are behind it
    while process.poll() is None:
        if locked is None and (straight / ".run.lock").exists():
            locked = time.time() - started
        time.sleep(0.01)
    assert process.returncode == 0 and locked is not None
    duration = time.time() - started
    written = [p.stat().st_mtime - started for p in checkpoint_files.list_checkpoints(straight / "checkpoints")]
    first, last = written[0], written[-1]  # when the first and the last checkpoint were complete
    rng = random.Random(0)
    # (the file to wait for, then how long to wait more): anchored to the run's own progress, so a quicker or
    # slower rerun still dies at the intended stage. Start-up's time varies most (a cold first run took 5.1 s to its
    # first checkpoint, a warm one 3.4 s): the early kills count from the run lock (taken after the imports and
    # Hydra, 1.6 s before the first checkpoint), not from the launch (from the launch, a warm rerun reached its
    # first checkpoint before both early kills in CI). 0.8: before the last checkpoint, also when the straight run
    # was slowed by other work on the machine
    moments = ([(".run.lock", rng.uniform(0.1, 0.6) * (first - locked)) for _ in range(2)]
               + [("checkpoints/epoch-0001.pt", rng.uniform(0, 0.8 * (last - first))) for _ in range(3)]
               + [("checkpoints/epoch-0003.pt", rng.uniform(0, 0.8 * (duration - last))) for _ in range(2)])
    stages = set()
    for attempt, (anchor, moment) in enumerate(moments):
        run_dir = tmp_path / f"killed-{attempt}"
        process = run_command(run_dir, tmp_path)
        while not (run_dir / anchor).exists() and process.poll() is None:
            time.sleep(0.01)
        time.sleep(moment)
        process.send_signal(signal.SIGKILL)  # a no-op if it ended already: the stages below show it did not
        process.wait()
        finished = (run_dir / "eval" / "best.json").exists()
        stages.add("finished" if finished else len(checkpoint_files.list_checkpoints(run_dir / "checkpoints")))
        assert run_command(run_dir, tmp_path).wait(timeout=600) == 0, f"rerun after a kill at {anchor} + {moment:.1f} s"
        assert_identical(checkpoint_weights(straight, 3), checkpoint_weights(run_dir, 3))
        assert (run_dir / "eval" / "best.json").exists()
        assert temporaries(run_dir) == [], f"a kill at {anchor} + {moment:.1f} s left {temporaries(run_dir)}"
    # at least three stages: before a checkpoint, between checkpoints, after the last one (in the evaluation)
    assert len(stages - {"finished"}) >= 3, f"the kills came at too few stages (checkpoints written then: {stages})"


@pytest.mark.parametrize("signal_name", ["SIGUSR1", "SIGTERM"])
def test_a_stop_signal_mid_epoch_checkpoints_and_the_rerun_ends_identical(tmp_path, signal_name):
    straight = run_cli([*STOPPABLE, f"hydra.run.dir={tmp_path / 'straight'}"], cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr
    stopped_dir = tmp_path / "stopped"
    process = subprocess.Popen([sys.executable, "-m", "runner", *STOPPABLE, f"hydra.run.dir={stopped_dir}"],
                               cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = stopped_dir / "checkpoints" / checkpoint_files.checkpoint_name(1)
    deadline = time.monotonic() + 120
    while not first.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # into epoch 2
    process.send_signal(getattr(signal, signal_name))
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 75, output[-2000:]
    assert f"stopped by {signal_name} at step" in output and "Resume with the same command" in output
    mid_epoch = checkpoint_files.list_preempted(stopped_dir / "checkpoints")
    assert len(mid_epoch) == 1 and not (stopped_dir / "checkpoints" / checkpoint_files.checkpoint_name(2)).exists()

    rerun = run_cli([*STOPPABLE, f"hydra.run.dir={stopped_dir}"], cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming from {mid_epoch[0]}" in rerun.stdout and "(resumed after" in rerun.stdout
    a, b = checkpoint_weights(tmp_path / "straight", 3), checkpoint_weights(stopped_dir, 3)
    assert_identical(a, b)  # bit-identical
    assert checkpoint_files.list_preempted(stopped_dir / "checkpoints") == []  # superseded by epoch checkpoints


@pytest.fixture(scope="module")
def every_bad_image(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """Two classes of six good PNGs, plus one file of each bad and odd kind in class_1."""
    root = make_imagefolder(tmp_path_factory.mktemp("images"), classes=2, per_class=6)
    files = {kind: make_bad_image(root / "class_1" / f"{kind.replace(' ', '_')}.jpg", kind)
             for kind in (*BAD_IMAGES, *ODD_IMAGES)}
    return root, files


def imagefolder_run(root: Path, *settings: str) -> list[str]:
    return ["dataset=imagefolder", f"dataset.root={root}", "dataset.num_classes=2", "dataset.image_size=[8,8]",
            "trainer.epochs=2", "trainer.batch_size=4", "trainer.micro_batch_size=4", "trainer.num_workers=2", "evaluate.after_training=false",
            "checkpoint.every_epochs=1", *settings]


@pytest.mark.parametrize("kind", BAD_IMAGES)
def test_each_bad_image_stops_a_raise_run_with_one_line_naming_it(kind, every_bad_image, tmp_path):
    root, files = every_bad_image
    folder = tmp_path / "images"
    make_imagefolder(folder, classes=2, per_class=6)
    shutil.copy(files[kind], folder / "class_1" / files[kind].name)
    result = run_cli(imagefolder_run(folder, f"hydra.run.dir={tmp_path / 'run'}"), cwd=tmp_path)
    assert result.returncode == 2, result.stdout[-2000:]
    errors = [line for line in result.stdout.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"{files[kind].name} cannot be decoded as an image" in errors[0]
    assert "dataset.bad_images=skip" in errors[0] and "Traceback" not in result.stdout + result.stderr


def test_skip_trains_without_the_bad_images_lists_them_and_counts_the_conversions(every_bad_image, tmp_path):
    root, files = every_bad_image
    runs = [tmp_path / "first", tmp_path / "second"]
    for run_dir in runs:
        result = run_cli(imagefolder_run(root, "dataset.bad_images=skip", f"hydra.run.dir={run_dir}"), cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-2000:]
    listed = (runs[0] / "skipped_images.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in listed) == sorted(str(files[k]) for k in BAD_IMAGES)
    record = json.loads((runs[0] / "run.json").read_text())
    assert record["images"] == {"skipped": 4, "converted": {"CMYK": 1, "L": 1}, "rotated": 0, "upscaled": 1}
    log = (runs[0] / "train.log").read_text()
    assert "4 image files do not decode and are left out" in log
    assert log.count("images: converted 1 CMYK (CMYK), 1 grayscale (L)") == 1
    assert_identical(checkpoint_weights(runs[0], 2), checkpoint_weights(runs[1], 2))  # the same files, every run


@pytest.mark.parametrize("damage", ["truncated", "empty", "random bytes"])
def test_a_damaged_newest_checkpoint_resumes_from_the_previous_one(damage, tmp_path, caplog):
    two = compose_config([*DETERMINISTIC_TINY, "trainer.epochs=2"])
    three = compose_config([*DETERMINISTIC_TINY, "trainer.epochs=3"])
    train_and_evaluate(three, tmp_path / "straight")
    run_dir = tmp_path / "damaged"
    train_and_evaluate(two, run_dir)
    newest = run_dir / "checkpoints" / "epoch-0002.pt"
    content = newest.read_bytes()
    newest.write_bytes({"truncated": content[: len(content) // 2], "empty": b"",
                        "random bytes": os.urandom(len(content))}[damage])
    train_and_evaluate(three, run_dir)
    assert "skipping" in caplog.text and "epoch-0002.pt" in caplog.text
    assert_identical(checkpoint_weights(tmp_path / "straight", 3), checkpoint_weights(run_dir, 3))


def test_a_full_disk_at_the_second_checkpoint_is_one_line_and_keeps_the_first(tmp_path, monkeypatch):
    saves = []
    real_save = torch.save

    def fills_the_disk(obj, file):
        saves.append(1)
        if len(saves) == 2:
            file.write(b"the start of a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, file)

    monkeypatch.setattr(checkpoint_files.torch, "save", fills_the_disk)
    run_dir = tmp_path / "run"
    with pytest.raises(UserError, match=r"no space left on the device .* epoch-0002.pt .* epoch-0001.pt is intact"):
        train_and_evaluate(compose_config([*TINY, "trainer.epochs=3"]), run_dir)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["epoch-0001.pt"]
    assert checkpoint_files.load(run_dir / "checkpoints" / "epoch-0001.pt")["epoch"] == 1
    assert '"status": "failed: UserError' in (run_dir / "run.json").read_text()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    train_and_evaluate(compose_config([*TINY, "model=linear", "trainer.epochs=1"]), run_dir)
    return run_dir


def malicious_runs(finished_run: Path, tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    """(run folder, marker the payload would create) for a pickle payload and each crafted config."""
    runs = {}
    pickled_marker = tmp_path / "pickle" / "PWNED"
    pickled_marker.parent.mkdir()
    pickled = payload(pickled_marker)["f"]  # a pickle whose unpickling creates the marker
    runs["a pickle payload"] = (copy_with_checkpoint(finished_run, tmp_path / "pickle" / "run", Path(pickled)),
                                pickled_marker)
    for index, name in enumerate(crafted_models(tmp_path)):
        folder = tmp_path / f"config-{index}"
        folder.mkdir()
        marker = folder / "PWNED"
        model = crafted_models(marker)[name]
        state = checkpoint_files.load(finished_run / "checkpoints" / "epoch-0001.pt")
        state["config"]["model"] = model
        path = folder / "crafted.pt"
        checkpoint_files.save_atomic(state, path)
        runs[name] = (copy_with_checkpoint(finished_run, folder / "run", path), marker)
    return runs


def copy_with_checkpoint(run: Path, copy: Path, checkpoint: Path) -> Path:
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("eval"))
    shutil.copy(checkpoint, copy / "checkpoints" / "epoch-0001.pt")
    return copy


@pytest.mark.parametrize("entry", ["resume=", "checkpoint=", "run_dir=", "watch=true"])
def test_malicious_checkpoints_never_run_their_payload(entry, finished_run, tmp_path):
    for case, (run_dir, marker) in malicious_runs(finished_run, tmp_path).items():
        path = run_dir / "checkpoints" / "epoch-0001.pt"
        # a file that does not load is refused when named, and skipped with a warning in a run folder
        skipped = case == "a pickle payload" and entry in ("run_dir=", "watch=true")
        with contextlib.nullcontext() if skipped else pytest.raises(UserError):
            if entry == "resume=":
                train_and_evaluate(compose_config([*TINY, "model=linear", f"resume={path}"]), tmp_path / "resumed")
            else:
                setting = {"checkpoint=": [f"checkpoint={path}"], "run_dir=": [f"run_dir={run_dir}"],
                           "watch=true": [f"run_dir={run_dir}", "watch=true", "poll_seconds=0.1"]}[entry]
                evaluate(compose_config(setting, config_name="evaluate"))
        assert not marker.exists(), f"{case} through {entry}: the payload ran"


def bad_values(schema) -> list[tuple[str, str]]:
    """(field, a bad value) for every field of a settings schema, by its type."""
    choices = {"precision", "device", "split", "metric", "direction", "tta", "method"}
    cases = []
    for field in dataclasses.fields(schema):
        kind = typing.get_args(field.type)[0] if typing.get_origin(field.type) is typing.Union else field.type
        kind = {"int": int, "float": float, "bool": bool, "str": str}.get(kind, kind) if isinstance(kind, str) else kind
        if kind is bool:
            cases.append((field.name, "maybe"))
        elif kind in (int, float):
            cases += [(field.name, "-1"), (field.name, "abc")]
        elif field.name in choices:
            cases.append((field.name, "nosuch"))
    return cases


MALFORMED = [
    *[(f"trainer.{k}", v) for k, v in bad_values(TrainerSettings)],
    *[(f"checkpoint.{k}", v) for k, v in bad_values(CheckpointSettings)],
    ("loss.label_smoothing", "-1"), ("loss.label_smoothing", "abc"), ("loss.label_smoothing", "1"),
    *[(f"evaluate.{k}", v) for k, v in bad_values(TrainingEvaluation) if k != "after_training"],
    *[(f"checks.{k}", v) for k, v in bad_values(ChecksSettings)],
    *[(f"lr_find.{k}", v) for k, v in bad_values(LrFindSettings)],
]


def test_the_table_of_malformed_settings_is_long_enough():
    assert len(MALFORMED) >= 30


@pytest.mark.parametrize(("key", "value"), MALFORMED, ids=[f"{k}={v}" for k, v in MALFORMED])
def test_every_malformed_setting_is_one_line_naming_key_value_and_fix(key, value, capsys):
    with pytest.raises(SystemExit) as stopped:
        refuse_bad_command_line("train", validate, [f"{key}={value}"])
    assert stopped.value.code == 2
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1 and key in lines[0] and value in lines[0] and "Fix:" in lines[0], lines


@pytest.mark.parametrize(("key", "value"), bad_values(EvaluateCommand))
def test_every_malformed_evaluator_setting_is_one_line(key, value, capsys):
    with pytest.raises(SystemExit) as stopped:
        refuse_bad_command_line("evaluate", validate_evaluate_command, ["run_dir=x", f"{key}={value}"])
    assert stopped.value.code == 2
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1 and key in lines[0] and "Fix:" in lines[0], lines
