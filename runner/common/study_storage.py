"""The Optuna study's storage, shared by the sweeper (runner/sweep/) and each trial's training job
(runner/sweep/trial_link.py), which talk only through it: a journal file in the sweep directory
by default, or any Optuna storage URL (postgresql://...). Also the pruner by name and the
heartbeat attribute, which both sides must agree on.

A database's password never travels in a config: it comes from RUNNER_STORAGE_URL (the environment,
which the trials' processes inherit) or from libpq's ~/.pgpass / PGPASSWORD; the trials are given the
URL without it (`without_password`), and whatever prints or logs a URL masks it (`redacted`, `redact`).
Optuna is imported only where a storage is opened: the redaction is cheap for a run's first log lines.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from urllib.parse import unquote, unquote_plus

from runner.common.errors import UserError

SCHEMA_LOCK = 0x72756E6E  # PostgreSQL advisory lock key of the schema creation ("runn")
HEARTBEAT = "runner:heartbeat"  # trial system attr: time.time() of the trial job's last sign of life
ENVIRONMENT = "RUNNER_STORAGE_URL"  # the storage URL with its password, where no config holds it
SECRET_PARAMETERS = ("password", "passwd", "pwd", "sslpassword")  # a URL's query parameters that are secrets
# a database URL as SQLAlchemy reads it: scheme://user:password@host... (the password runs to the first @)
URL = re.compile(r"(?P<scheme>[\w+]+://)(?:(?P<user>[^:/@\s'\"]*)(?::(?P<password>[^@\s'\"]*))?@)?"
                 r"(?P<rest>[^?\s'\"]*)(?:\?(?P<query>[^\s'\"]*))?")


def _rebuilt(url: str, password: str | None, keep_secret_parameters: bool) -> str:
    """Every URL in `url` with its password replaced by `password` (None: removed), and its secret query
    parameters masked (or removed); every other character as it was."""
    def one(match: re.Match) -> str:
        user, query = match["user"], match["query"]
        if user is not None and match["password"] is not None:
            user += "" if password is None else f":{password}"
        kept = []
        for part in (query or "").split("&") if query else []:
            key = part.partition("=")[0]
            if unquote_plus(key).lower() not in SECRET_PARAMETERS:
                kept.append(part)
            elif keep_secret_parameters:
                kept.append(f"{key}=***")
        tail = "" if query is None or (query and not kept) else "?" + "&".join(kept)
        return match["scheme"] + (f"{user}@" if user is not None else "") + match["rest"] + tail
    return URL.sub(one, url)


def redacted(url: str) -> str:
    """The URL as it may be printed, logged or written: postgresql://user:***@host/db."""
    return _rebuilt(url, "***", keep_secret_parameters=True)


def redact(text: str, password: str | None = None) -> str:
    """Any text (a command line, a log line, a config) with the password of every URL in it masked, and
    `password` wherever it stands (a driver's error may quote it outside a URL)."""
    text = redacted(text)
    for form in {password, unquote(password)} if password else ():
        text = text.replace(form, "***")
    return text


def without_password(url: str) -> str:
    """The URL a trial is given: postgresql://user@host/db; its process takes the password from
    RUNNER_STORAGE_URL (inherited) or libpq from ~/.pgpass or PGPASSWORD."""
    return _rebuilt(url, None, keep_secret_parameters=False)


def has_password(url: str) -> bool:
    return without_password(url) != url


def password_of(url: str) -> str | None:
    match = URL.search(url)
    return match["password"] if match and match["password"] else None


def setting(storage: str | None) -> str | None:
    """The storage the sweep uses: hydra.sweeper.storage, else RUNNER_STORAGE_URL, else None (the journal)."""
    return storage or os.environ.get(ENVIRONMENT) or None


def connection_url(url: str) -> str:
    """The URL to connect with: RUNNER_STORAGE_URL where it is this URL with a password, else the URL itself."""
    secret = os.environ.get(ENVIRONMENT, "")
    return secret if secret and "://" in url and not has_password(url) and without_password(secret) == url else url


def refuse_passwords(overrides: list[str]) -> None:
    """The sweeper's settings and the command's overrides are copied into every trial's .hydra/*.yaml (and a
    command line stays in the shell history and `ps`): a URL with a password there is refused in one line;
    the password comes from RUNNER_STORAGE_URL or ~/.pgpass."""
    for override in overrides:
        if not has_password(override):
            continue
        key, _, url = override.partition("=")
        where = ("give it as " if key == "hydra.sweeper.storage" else "set ") + without_password(url)
        raise UserError(f"{key}={redacted(url)} carries a password, which every trial's .hydra/*.yaml would copy (and "
                        f"the shell history and `ps` show). Fix: export {ENVIRONMENT}='{redacted(url)}' with the "
                        f"password in place of *** (and leave hydra.sweeper.storage unset, or {where}), or put the "
                        "password in ~/.pgpass")


def storage_for(url: str):
    """An Optuna storage from a URL; a plain path (or journal:PATH) is a journal file."""
    import optuna

    if "://" not in url:
        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    try:
        return open_database(connection_url(url))
    except Exception as error:  # the URL it tried, password masked (one from RUNNER_STORAGE_URL shows as ***)
        raise UserError(redact(f"the study's storage {redacted(connection_url(url))} cannot be opened "
                               f"({type(error).__name__}: {error}). "
                               "Fix: check the URL, the server and its driver (pip install -e '.[postgres]'); a "
                               f"password from ${ENVIRONMENT} or ~/.pgpass", password_of(connection_url(url)))
                        ) from None


def open_database(url: str):
    """Optuna's database storage, its tables created by one worker at a time: workers started together
    on a fresh database (a SLURM job array) would otherwise collide in CREATE TYPE / CREATE TABLE, and
    all but one crash. PostgreSQL serializes on an advisory lock; other databases retry."""
    import optuna
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


PRUNERS = {  # optuna.pruners' class, and the runner's defaults of its options
    "none": ("NopPruner", {}),
    "median": ("MedianPruner", {"n_startup_trials": 2, "n_warmup_steps": 0}),
    "percentile": ("PercentilePruner", {"percentile": 25.0, "n_startup_trials": 2}),
    "hyperband": ("HyperbandPruner", {}),
    "successive_halving": ("SuccessiveHalvingPruner", {}),
}


def make_pruner(name: str, options: dict | None = None):
    """A pruner by name, hydra.sweeper.pruner_options as its keyword arguments (over the runner's defaults)."""
    import optuna

    if name not in PRUNERS:
        raise UserError(f"hydra.sweeper.pruner={name!r} is not known. Fix: one of {', '.join(PRUNERS)}")
    class_name, defaults = PRUNERS[name]
    kind = getattr(optuna.pruners, class_name)
    try:
        return kind(**{**defaults, **dict(options or {})})
    except TypeError as error:
        raise UserError(f"hydra.sweeper.pruner_options={dict(options or {})} do not fit pruner {name} ({error}). "
                        f"Fix: the keyword arguments of optuna.pruners.{kind.__name__}") from None
