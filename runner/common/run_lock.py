"""One live trainer per run folder: `python -m runner hydra.run.dir=RUN` holds RUN/.run.lock while it trains.

Two trainers on one folder (the same command started twice, a job array whose tasks share a
folder) would both train every epoch, write each checkpoint twice and leave `run.json` with
attempts that never end. The lock is a POSIX record lock (`fcntl.lockf`): the kernel releases it
when its process dies, however it dies, so a killed trainer never leaves the folder locked.
Such locks are shared between machines on NFS (v3 with lockd, v4) and on Lustre or BeeGFS
mounted with `flock`; where the filesystem has no locks at all the trainer warns and goes on.
The file also names its holder (host, pid, since when) for the refusal's message.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from runner.common.errors import UserError
from runner.common.io import open_unlinked
from runner.common.provenance import now

log = logging.getLogger(__name__)

LOCK_NAME = ".run.lock"


@contextlib.contextmanager
def holding(run_dir: Path) -> Iterator[None]:
    """Hold run_dir for this process; a UserError naming the holder if a live process holds it."""
    path = Path(run_dir) / LOCK_NAME
    descriptor = open_unlinked(path, os.O_RDWR | os.O_CREAT)  # never truncated on open, never through a link
    try:
        if not lock(descriptor, path):
            raise UserError(
                f"{run_dir} is in use by another trainer ({describe(read_holder(descriptor))}): two trainers on one "
                "run folder would each write every checkpoint. Fix: wait for it to end (or stop it), or train in "
                "another folder (drop hydra.run.dir=...)")
        stale = read_holder(descriptor)  # a trainer that ended without letting go: killed
        if stale:
            log.info("the trainer named in %s (%s) no longer holds the run folder (it was killed): taken over",
                     path.name, describe(stale))
        write_holder(descriptor)
        try:
            yield
        finally:
            os.ftruncate(descriptor, 0)  # let go cleanly: the next trainer finds no stale holder
    finally:
        os.close(descriptor)  # releases the lock (the kernel does the same if this process dies)


def lock(descriptor: int, path: Path) -> bool:
    """Take the lock without waiting: False when another process holds it."""
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as error:
        if error.errno in (errno.EACCES, errno.EAGAIN):
            return False
        if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            log.warning("%s cannot be locked on this filesystem (%s): a second trainer on this run folder would "
                        "not be refused", path, os.strerror(error.errno))
            return True
        raise


def read_holder(descriptor: int) -> dict:
    try:
        holder = json.loads(os.pread(descriptor, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def write_holder(descriptor: int) -> None:
    text = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": now()}).encode()
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, text, 0)


def describe(holder: dict) -> str:
    return (f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, "
            f"since {holder.get('since', '?')}")
