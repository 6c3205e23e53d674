"""A symbolic link planted inside a run folder never makes a writer write outside it (issue 21, item 6).

Each writer that writes into a run folder (checkpoints, the evaluator's eval/, TensorBoard's tb/,
compare's report, a sweep's reports) is met with a link to a file or folder outside; it refuses in
one line naming the link, and the file outside is untouched.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from runner.cli.evaluate import evaluate
from runner.common import checkpoint_files, io
from runner.common.errors import UserError
from runner.run import train_and_evaluate
from tests.conftest import TINY, compose_config

OUTSIDE_TEXT = "a file of someone else's, outside the run\n"


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A one-epoch run, evaluated: eval/ holds every file the evaluator writes."""
    run_dir = tmp_path_factory.mktemp("links") / "run"
    train_and_evaluate(compose_config([*TINY, "model=linear", "trainer.epochs=1", "evaluate.after_training=true"]),
                       run_dir)
    (run_dir / ".hydra").mkdir(exist_ok=True)
    return run_dir


def copied(run_dir: Path, tmp_path: Path, keep_eval: bool = True) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=None if keep_eval else shutil.ignore_patterns("eval"))
    return copy


def outside(tmp_path: Path) -> tuple[Path, Path]:
    """(a file, a folder) outside the run, with something in each."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "keep.txt").write_text(OUTSIDE_TEXT)
    file = tmp_path / "precious.txt"
    file.write_text(OUTSIDE_TEXT)
    return file, folder


def plant(link: Path, target: Path) -> None:
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    else:
        link.unlink(missing_ok=True)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def untouched(file: Path, folder: Path) -> None:
    assert file.read_text() == OUTSIDE_TEXT
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"] and (folder / "keep.txt").read_text() == OUTSIDE_TEXT


def evaluator(*overrides):
    return compose_config(list(overrides), config_name="evaluate")


# (planted path in the run, file or folder, the evaluator's settings beyond run_dir)
EVALUATOR_LINKS = [
    ("eval/.lock", "file", []),
    ("eval/metrics.jsonl", "file", []),
    ("eval/metrics.csv", "file", []),
    ("eval/best.json", "file", []),
    ("eval/evaluate.log", "file", []),
    ("eval/confusion_matrix.png", "file", []),
    ("eval/test_ledger.jsonl", "file", ["split=test"]),
    ("eval/predictions", "folder", []),
    ("eval", "folder", []),
    ("tb", "folder", []),
]


@pytest.mark.parametrize(("name", "kind", "extra"), EVALUATOR_LINKS, ids=[n for n, _, _ in EVALUATOR_LINKS])
def test_the_evaluator_refuses_a_link_in_the_run_folder_and_writes_nothing_outside(finished, tmp_path, name, kind,
                                                                                    extra):
    run_dir = copied(finished, tmp_path, keep_eval=name not in ("eval/metrics.jsonl", "eval/metrics.csv",
                                                                 "eval/best.json", "eval/confusion_matrix.png",
                                                                 "eval/predictions", "tb"))
    file, folder = outside(tmp_path)
    plant(run_dir / name, file if kind == "file" else folder)
    with pytest.raises(UserError) as refused:
        evaluate(evaluator(f"run_dir={run_dir}", *extra))
    said = str(refused.value)
    assert name.rsplit("/", 1)[-1] in said and "symbolic link" in said and "Fix:" in said and "\n" not in said
    untouched(file, folder)


def test_a_lock_file_is_never_truncated(tmp_path):
    lock = tmp_path / "eval" / ".lock"
    lock.parent.mkdir()
    lock.write_text("held\n")
    with io.exclusive(lock):
        pass
    assert lock.read_text() == "held\n"


def test_the_checkpoint_writer_refuses_a_linked_file_or_folder(finished, tmp_path):
    state = checkpoint_files.load(finished / "checkpoints" / "epoch-0001.pt")
    run_dir = copied(finished, tmp_path)
    file, folder = outside(tmp_path)
    plant(run_dir / "checkpoints" / "epoch-0002.pt", file)
    with pytest.raises(UserError, match=r"epoch-0002.pt is a symbolic link .*Fix:"):
        checkpoint_files.save_atomic(state, run_dir / "checkpoints" / "epoch-0002.pt")
    plant(run_dir / "checkpoints", folder)
    with pytest.raises(UserError, match=r"checkpoints is a symbolic link .*Fix:"):
        checkpoint_files.save_atomic(state, run_dir / "checkpoints" / "epoch-0002.pt")
    untouched(file, folder)


def test_a_linked_tensorboard_folder_is_refused_before_it_is_opened(finished, tmp_path):
    from runner.common.run_folders import tensorboard_folder

    run_dir = copied(finished, tmp_path)
    assert tensorboard_folder(run_dir) == str(run_dir / "tb")
    file, folder = outside(tmp_path)
    plant(run_dir / "tb", folder)
    with pytest.raises(UserError, match=r"tb is a symbolic link .*Fix:"):
        tensorboard_folder(run_dir)
    untouched(file, folder)


def test_compare_refuses_to_write_its_report_through_a_link(finished, tmp_path, capsys):
    from runner.compare import cli

    a, b = copied(finished, tmp_path / "a"), copied(finished, tmp_path / "b")
    out = tmp_path / "report"
    file, folder = outside(tmp_path)
    plant(out / "compare.md", file)
    with pytest.raises(SystemExit) as stopped:
        cli([str(a), str(b), f"out={out}"])
    said = capsys.readouterr().err
    assert stopped.value.code == 2 and "compare.md is a symbolic link" in said and "Fix:" in said
    untouched(file, folder)


@pytest.mark.parametrize("name", ["trials.csv", "optimization_results.yaml"])
def test_the_sweep_reports_refuse_a_link(tmp_path, name):
    import optuna

    from runner.sweep import results

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-1, log=True), n_trials=2)
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    file, folder = outside(tmp_path)
    plant(sweep_dir / name, file)
    with pytest.raises(UserError, match=rf"{name} is a symbolic link .*Fix:"):
        if name == "trials.csv":
            results.write_trials_csv(study, sweep_dir)
        else:
            results.write_best(study, sweep_dir, [], {})
    untouched(file, folder)


@pytest.mark.parametrize("writer", ["write_atomic", "append_line", "exclusive"])
def test_every_io_writer_refuses_a_linked_folder_inside_a_run(tmp_path, writer):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    file, folder = outside(tmp_path)
    plant(run_dir / "eval", folder)
    path = run_dir / "eval" / "sub" / "x.txt"
    with pytest.raises(UserError, match=r"eval is a symbolic link .* inside the run folder"):
        if writer == "write_atomic":
            io.write_text_atomic(path, "x")
        elif writer == "append_line":
            io.append_line(path, "x")
        else:
            with io.exclusive(path):
                pass
    untouched(file, folder)


def test_a_run_folder_that_is_itself_a_link_is_written_as_usual(tmp_path):
    real = tmp_path / "real-run"
    (real / ".hydra").mkdir(parents=True)
    latest = tmp_path / "latest"
    latest.symlink_to(real)
    io.write_text_atomic(latest / "eval" / "best.json", "{}\n")
    io.append_line(latest / "eval" / "metrics.jsonl", "{}")
    assert (real / "eval" / "best.json").read_text() == "{}\n" and os.path.isfile(real / "eval" / "metrics.jsonl")


@pytest.mark.parametrize("linked", ["tb", ".run.lock"])
def test_the_trainer_refuses_a_link_in_its_run_folder_and_writes_nothing_outside(tmp_path, linked):
    """The trainer's own writers: TensorBoard's tb/ (SummaryWriter follows links) and the run lock."""
    run_dir, outside = tmp_path / "run", tmp_path / "outside"
    run_dir.mkdir()
    (run_dir / ".hydra").mkdir()
    if linked == "tb":
        outside.mkdir()
    else:
        outside.write_text(OUTSIDE_TEXT)
    (run_dir / linked).symlink_to(outside)
    with pytest.raises(UserError) as refused:
        train_and_evaluate(compose_config([*TINY, "trainer.epochs=1"]), run_dir)
    assert linked in str(refused.value) and "link" in str(refused.value) and "\n" not in str(refused.value)
    if linked == "tb":
        assert list(outside.iterdir()) == []
    else:
        assert outside.read_text() == OUTSIDE_TEXT
