"""Sweep workers started at the same instant on a fresh storage (a SLURM job array, or the README's
"start the same command in several processes"): every one of them opens the one study."""

from __future__ import annotations

import subprocess
import sys
import time

import optuna
import pytest

from tests.conftest import cli_env

OPEN_AT = """
import sys, time
from runner.sweep import study
storage, name, at = sys.argv[1], sys.argv[2], float(sys.argv[3])
time.sleep(max(0.0, at - time.time()))
opened = study.open_study(name, storage, directions=["maximize"], sampler=None, pruner=None)
opened.set_user_attr("opened_by_" + sys.argv[4], True)
"""


def open_together(storage: str, workers: int, cwd) -> list[subprocess.CompletedProcess]:
    """`workers` processes that open the same study on `storage` at one instant, a few seconds from now
    (after each has imported optuna and the storage's driver)."""
    at = time.time() + 10
    processes = [subprocess.Popen([sys.executable, "-c", OPEN_AT, storage, "together", str(at), str(i)], cwd=cwd,
                                  env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(workers)]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


def assert_all_opened(storage: str, results: list[subprocess.CompletedProcess]) -> None:
    for result in results:
        assert result.returncode == 0, result.stderr[-2000:]
    opened = optuna.load_study(study_name="together", storage=storage)
    assert sorted(opened.user_attrs) == sorted(f"opened_by_{i}" for i in range(len(results)))


@pytest.mark.slow
def test_workers_open_a_fresh_postgresql_study_at_the_same_instant(fresh_postgres_url, tmp_path):
    results = open_together(fresh_postgres_url, workers=8, cwd=tmp_path)
    assert_all_opened(fresh_postgres_url, results)


@pytest.mark.slow
def test_workers_open_a_fresh_journal_study_at_the_same_instant(tmp_path):
    journal = str(tmp_path / "sweep" / "study.journal")
    results = open_together(journal, workers=8, cwd=tmp_path)
    from runner.common.study_storage import storage_for

    assert_all_opened(storage_for(journal), results)
