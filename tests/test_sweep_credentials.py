"""The storage's password stays out of everything the runner writes or prints.

It comes from the environment (RUNNER_STORAGE_URL) or from libpq's own ~/.pgpass / PGPASSWORD, never
from the command line (refused in one line: it would also stay in the shell history and `ps`). The
sweeper hands the trials the URL without it; a URL printed or logged is masked (user:***@host).
A planted password is looked for in every file of a real sweep's folder (checkpoints and TensorBoard
events too) and in its console output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from runner.common import study_storage
from tests.conftest import cli_env, run_cli
from tests.test_sweep import LR, TINY_SWEEP

PLANTED = "Planted-S3cret"


@pytest.mark.parametrize(("url", "shown", "given"), [
    ("postgresql://user:Planted-S3cret@db.example.org/optuna", "postgresql://user:***@db.example.org/optuna",
     "postgresql://user@db.example.org/optuna"),
    ("postgresql+psycopg://user:Planted-S3cret@10.0.0.5:5433/optuna?sslmode=require",
     "postgresql+psycopg://user:***@10.0.0.5:5433/optuna?sslmode=require",
     "postgresql+psycopg://user@10.0.0.5:5433/optuna?sslmode=require"),
    ("postgresql://user@db/optuna?sslmode=require&password=Planted-S3cret",
     "postgresql://user@db/optuna?sslmode=require&password=***", "postgresql://user@db/optuna?sslmode=require"),
    ("mysql+pymysql://root:Planted%40S3cret/x@db/optuna", "mysql+pymysql://root:***@db/optuna",
     "mysql+pymysql://root@db/optuna"),
    ("postgresql://user@db/optuna", "postgresql://user@db/optuna", "postgresql://user@db/optuna"),
    ("outputs/smoke/sweeps/s/study.journal", "outputs/smoke/sweeps/s/study.journal",
     "outputs/smoke/sweeps/s/study.journal"),
])
def test_a_storage_url_is_shown_masked_and_given_without_its_password(url, shown, given):
    assert study_storage.redacted(url) == shown
    assert study_storage.without_password(url) == given
    assert study_storage.has_password(url) == (url != given)
    line = f"python -m runner -m 'hydra.sweeper.storage={url}' and more: {url}"
    assert study_storage.redact(line) == f"python -m runner -m 'hydra.sweeper.storage={shown}' and more: {shown}"


def test_the_password_comes_from_runner_storage_url_for_the_same_database(monkeypatch):
    secret = "postgresql://user:Planted-S3cret@db/optuna"
    monkeypatch.setenv("RUNNER_STORAGE_URL", secret)
    assert study_storage.connection_url("postgresql://user@db/optuna") == secret  # what a trial is given
    assert study_storage.connection_url("postgresql://user@otherdb/optuna") == "postgresql://user@otherdb/optuna"
    assert study_storage.setting(None) == secret and study_storage.setting("x.journal") == "x.journal"
    monkeypatch.delenv("RUNNER_STORAGE_URL")
    assert study_storage.connection_url("postgresql://user@db/optuna") == "postgresql://user@db/optuna"  # ~/.pgpass


def test_a_storage_that_cannot_be_opened_is_named_without_its_password(monkeypatch):
    monkeypatch.setenv("RUNNER_STORAGE_URL", f"postgresql://user:{PLANTED}@127.0.0.1:9/optuna")
    with pytest.raises(Exception) as refused:
        study_storage.storage_for("postgresql://user@127.0.0.1:9/optuna")
    assert PLANTED not in str(refused.value) and "user:***@127.0.0.1:9" in str(refused.value)


def files_holding(root: Path, secret: bytes) -> list[str]:
    return [str(path) for path in root.rglob("*") if path.is_file() and secret in path.read_bytes()]


@pytest.mark.parametrize("key", ["hydra.sweeper.storage", "hydra.sweeper.warm_start", "sweep.storage"])
def test_a_password_on_the_command_line_is_refused_in_one_line_and_written_nowhere(workdir, key):
    url = f"postgresql://user:{PLANTED}@127.0.0.1:9/optuna"
    result = run_cli([*TINY_SWEEP, LR, f"{key}={url}", "hydra.sweeper.n_trials=1"], cwd=workdir)
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output, output[-3000:]
    assert PLANTED not in output and files_holding(workdir, PLANTED.encode()) == []
    said = [line for line in output.splitlines() if "carries a password" in line]
    assert len(said) == 1 and f"{key}=postgresql://user:***@127.0.0.1:9" in said[0], output[-3000:]
    assert "Fix:" in said[0] and "RUNNER_STORAGE_URL" in said[0] and "~/.pgpass" in said[0], said[0]


@pytest.mark.slow
def test_a_planted_password_appears_in_no_file_of_a_postgresql_sweep_nor_its_output(fresh_postgres_url, workdir):
    """The test server trusts every local connection, so any password opens it: plant one in RUNNER_STORAGE_URL
    and run a real sweep (trials in-process, as Hydra's basic launcher runs them)."""
    from sqlalchemy.engine import make_url

    secret_url = make_url(fresh_postgres_url).set(password=PLANTED).render_as_string(hide_password=False)
    sweep_dir = workdir / "sweep"
    environment = {**cli_env(), "RUNNER_STORAGE_URL": secret_url}
    args = [*TINY_SWEEP, LR, f"hydra.sweeper.sweep_dir={sweep_dir}", "hydra.sweeper.study_name=secret",
            "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "evaluate.after_training=true",
            "hydra.sweeper.pruner=median"]  # the trial reports to the study: its job opens the storage too
    result = subprocess.run([sys.executable, "-m", "runner", *args], cwd=workdir, env=environment,
                            capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    study = optuna.load_study(study_name="secret", storage=study_storage.storage_for(secret_url))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    written = [p for p in sweep_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".pt" for p in written) and any("tfevents" in p.name for p in written)
    assert files_holding(workdir, PLANTED.encode()) == []
    assert PLANTED not in output
    assert PLANTED not in repr(study.user_attrs) + repr([t.user_attrs | t.system_attrs for t in study.trials])
    assert "user:***@" in output or "postgres:***@" in output  # where the study is, said without the password
    assert os.environ.get("RUNNER_STORAGE_URL") != secret_url
