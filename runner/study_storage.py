"""The Optuna study's storage, shared by the sweeper (runner/sweep/) and each trial's training job
(runner/training/trial.py), which talk only through it: a journal file in the sweep directory
by default, or any Optuna storage URL (postgresql://...). Also the pruner by name and the
heartbeat attribute, which both sides must agree on.
"""

from __future__ import annotations

import time
from pathlib import Path

import optuna

from runner.errors import UserError

SCHEMA_LOCK = 0x72756E6E  # PostgreSQL advisory lock key of the schema creation ("runn")
HEARTBEAT = "runner:heartbeat"  # trial system attr: time.time() of the trial job's last sign of life


def storage_for(url: str):
    """An Optuna storage from a URL; a plain path (or journal:PATH) is a journal file."""
    if "://" not in url:
        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    try:
        return open_database(url)
    except Exception as error:
        raise UserError(f"hydra.sweeper.storage={url} cannot be opened ({type(error).__name__}: {error}). "
                        "Fix: check the URL, the server and its driver (e.g. pip install psycopg2-binary)") from None


def open_database(url: str) -> optuna.storages.RDBStorage:
    """Optuna's database storage, its tables created by one worker at a time: workers started together
    on a fresh database (a SLURM job array) would otherwise collide in CREATE TYPE / CREATE TABLE, and
    all but one crash. PostgreSQL serializes on an advisory lock; other databases retry."""
    import sqlalchemy

    def storage():
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})

    engine = sqlalchemy.create_engine(url)
    try:
        if engine.dialect.name == "postgresql":
            with engine.connect() as connection:  # the lock ends with the connection, also if this process dies
                connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK})
                return storage()
        for attempt in range(5):
            try:
                return storage()
            except sqlalchemy.exc.DatabaseError:
                if attempt == 4:
                    raise
                time.sleep(0.2 * 2**attempt)
    finally:
        engine.dispose()


PRUNERS = {
    "none": (optuna.pruners.NopPruner, {}),
    "median": (optuna.pruners.MedianPruner, {"n_startup_trials": 2, "n_warmup_steps": 0}),
    "percentile": (optuna.pruners.PercentilePruner, {"percentile": 25.0, "n_startup_trials": 2}),
    "hyperband": (optuna.pruners.HyperbandPruner, {}),
    "successive_halving": (optuna.pruners.SuccessiveHalvingPruner, {}),
}


def make_pruner(name: str, options: dict | None = None) -> optuna.pruners.BasePruner:
    """A pruner by name, hydra.sweeper.pruner_options as its keyword arguments (over the runner's defaults)."""
    if name not in PRUNERS:
        raise UserError(f"hydra.sweeper.pruner={name!r} is not known. Fix: one of {', '.join(PRUNERS)}")
    kind, defaults = PRUNERS[name]
    try:
        return kind(**{**defaults, **dict(options or {})})
    except TypeError as error:
        raise UserError(f"hydra.sweeper.pruner_options={dict(options or {})} do not fit pruner {name} ({error}). "
                        f"Fix: the keyword arguments of optuna.pruners.{kind.__name__}") from None
