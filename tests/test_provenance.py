"""Provenance in a temporary git repository: clean, dirty (with git.diff), no repository."""

from __future__ import annotations

import json
import subprocess

import pytest

from runner.common import provenance
from runner.common.errors import UserError
from runner.run import train_and_evaluate as train_job
from tests.conftest import TINY, compose_config


def git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    git("init", "-q", "-b", "main", cwd=project)
    git("config", "user.email", "t@example.com", cwd=project)
    git("config", "user.name", "t", cwd=project)
    (project / "train_notes.txt").write_text("lr 0.1\n")
    (project / ".gitignore").write_text("runs/\n")
    git("add", ".", cwd=project)
    git("commit", "-q", "-m", "first", cwd=project)
    return project


def test_clean_tree(repo):
    run_dir = repo / "runs" / "a"
    run_dir.mkdir(parents=True)
    state = provenance.record_git(run_dir, repo, require_clean=False)
    assert state["dirty"] is False and state["branch"] == "main" and len(state["commit"]) == 40
    assert not (run_dir / "git.diff").exists()


def test_dirty_tree_writes_the_diff_and_lists_untracked_files(repo, caplog):
    (repo / "train_notes.txt").write_text("lr 0.2\n")
    (repo / "scratch.py").write_text("print(1)\n")
    run_dir = repo / "runs" / "b"
    run_dir.mkdir(parents=True)
    state = provenance.record_git(run_dir, repo, require_clean=False)
    assert state["dirty"] is True and state["describe"].endswith("-dirty")
    assert state["untracked"] == ["scratch.py"]
    diff = (run_dir / "git.diff").read_text()
    assert "-lr 0.1" in diff and "+lr 0.2" in diff
    assert "may not be reproducible" in caplog.text


def test_require_clean_git_refuses_a_dirty_tree(repo):
    (repo / "train_notes.txt").write_text("changed\n")
    with pytest.raises(UserError, match="uncommitted changes and require_clean_git=true"):
        provenance.record_git(repo, repo, require_clean=True)


def test_outside_a_repository_is_a_warning(tmp_path, caplog):
    assert provenance.record_git(tmp_path, tmp_path, require_clean=False) is None
    assert "not inside a git repository" in caplog.text


def test_run_json_records_versions_seed_and_times(repo, monkeypatch):
    monkeypatch.chdir(repo)
    run_dir = repo / "runs" / "c"
    train_job(compose_config([*TINY, "trainer.seed=3"]), run_dir)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and record["seed"] == 3
    assert record["git"]["commit"] and record["git"]["dirty"] is False
    assert {"python", "torch", "torchvision", "cuda", "cudnn", "device", "hostname", "slurm"} <= record["environment"].keys()
    assert record["start_time"] < record["end_time"]
    # a rerun (here: nothing left to do) keeps the earlier attempt
    train_job(compose_config([*TINY, "trainer.seed=3"]), run_dir)
    record = json.loads((run_dir / "run.json").read_text())
    assert len(record["attempts"]) == 1 and record["attempts"][0]["status"] == "finished"


def test_require_clean_git_outside_a_repository_refuses(tmp_path):
    """The setting promises "only from committed code": no repository cannot keep that promise."""
    with pytest.raises(UserError, match="not inside a git repository.*Fix:"):
        provenance.record_git(tmp_path, tmp_path, require_clean=True)


def test_require_clean_git_is_checked_before_any_work(tmp_path, monkeypatch):
    from runner.config.schema import validate
    from tests.conftest import compose_config

    cfg = compose_config(["require_clean_git=true"])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="require_clean_git=true.*not inside a git repository"):
        validate(cfg)


def test_a_rewritten_run_json_keeps_the_trackers_run_ids(tmp_path):
    """A resumed attempt rewrites run.json: the MLflow/W&B run ids it holds stay (one run = one tracker run)."""
    from runner.common.provenance import write_run_json

    write_run_json(tmp_path, {"start_time": "a", "status": "running"})
    record = json.loads((tmp_path / "run.json").read_text())
    (tmp_path / "run.json").write_text(json.dumps({**record, "trackers": {"mlflow": {"run_id": "r1"}}}))
    write_run_json(tmp_path, {"start_time": "b", "status": "running"})
    again = json.loads((tmp_path / "run.json").read_text())
    assert again["trackers"] == {"mlflow": {"run_id": "r1"}} and again["start_time"] == "b"
