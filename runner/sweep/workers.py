"""The sweep's workers, as its folder knows them: `.workers/HOST-PID`, one entry per live worker.

Several `python -m runner -m` processes on one machine (or a launcher that runs n_jobs trials at once)
share its cores: each trial takes its share (runtime.available_cores reads RUNNER_WORKERS_ON_HOST,
which the sweeper sets for it). The last worker out draws the plots, so that workers leaving together
do not each redraw them in turn under the sweep lock.

A worker holds an flock on its entry for its whole life, so an entry whose lock can be taken is a
killed worker's (removed when seen). Workers of other machines on a shared filesystem cannot be
probed that way: their entries count while their heartbeat (the file's time) is recent.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from runner.common.errors import UserError

log = logging.getLogger("runner.sweep")
SHARERS = "RUNNER_WORKERS_ON_HOST"  # the trial processes sharing this machine's cores (runtime.available_cores)
FOLDER = ".workers"


class Entry:
    """This worker's entry in the registry: locked while it lives, its time touched every heartbeat."""

    def __init__(self, sweep_dir: Path, processes: int, heartbeat_seconds: float):
        self.folder = Path(sweep_dir) / FOLDER
        self.made = [folder for folder in (self.folder, *self.folder.parents) if not folder.exists()]
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / f"{socket.gethostname()}-{os.getpid()}"
        staged = self.folder / f".{self.path.name}.new"
        self.descriptor = os.open(staged, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        fcntl.flock(self.descriptor, fcntl.LOCK_EX)  # locked before it is seen: never taken for a dead one
        os.write(self.descriptor, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                              "processes": processes}).encode())
        os.replace(staged, self.path)
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, args=(heartbeat_seconds,), daemon=True)
        self._beat.start()

    def _heartbeat(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def others(self, grace_seconds: float) -> int:
        """The other live workers of this sweep folder, on any machine that shares it."""
        return sum(1 for entry in live(self.folder.parent, grace_seconds) if entry["path"] != self.path)

    def leave(self) -> None:
        """Out of the registry (its folder too, when this is the last worker)."""
        self._stop.set()
        self._beat.join()
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self.descriptor)
        for folder in dict.fromkeys([self.folder, *self.made]):  # and those it made, unless others came in
            try:
                folder.rmdir()
            except OSError:  # not empty: another worker, or the sweep's files
                break


@contextlib.contextmanager
def registered(sweep_dir: Path, processes: int, heartbeat_seconds: float) -> Iterator[Entry]:
    """This process as a worker of the sweep in `sweep_dir`, running up to `processes` trials at a time."""
    try:
        entry = Entry(sweep_dir, processes, heartbeat_seconds)
    except OSError as error:  # the sweep's first write
        raise UserError(f"the sweep folder {sweep_dir} cannot be written ({error.strerror or error}). Fix: "
                        "hydra.sweeper.sweep_dir=A_FOLDER_YOU_CAN_WRITE (or the permissions of that one)") from None
    try:
        yield entry
    finally:
        if not entry._stop.is_set():
            entry.leave()


def live(sweep_dir: Path, grace_seconds: float) -> list[dict]:
    """The entries of live workers: on this machine, those whose lock is held (a killed worker's entry is
    removed); on others, those whose heartbeat is younger than grace_seconds."""
    folder, here, found = Path(sweep_dir) / FOLDER, socket.gethostname(), []
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        if path.name.startswith("."):
            continue
        try:
            entry = {**json.loads(path.read_text()), "path": path}
            if entry.get("host") == here:
                alive = held(path)
            else:
                alive = time.time() - path.stat().st_mtime < grace_seconds
        except (OSError, ValueError, TypeError, AttributeError):
            continue  # gone meanwhile, or not an entry
        if alive:
            found.append(entry)
    return found


def held(path: Path) -> bool:
    """Is the entry locked by its live worker? If not, it is a killed worker's: removed."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        if os.fstat(descriptor).st_ino == os.stat(path).st_ino:  # not a new worker's entry of the same name
            path.unlink()
        return False
    finally:
        os.close(descriptor)


def say_share(share: int, num_threads: int | None) -> int:
    """Log what each trial takes of this machine's cores when `share` trial processes share them; returns share."""
    from runner.common.runtime import available_cores

    saved = os.environ.get(SHARERS)
    os.environ[SHARERS] = str(share)  # as the trial's process will see it (hydra.job.env_set)
    try:
        threads = num_threads or available_cores()
    finally:
        if saved is None:
            del os.environ[SHARERS]
        else:
            os.environ[SHARERS] = saved
    log.info("%d trial process%s of this sweep share this machine's cores: each takes %d threads (%s)", share,
             "es" if share > 1 else "", threads, "trainer.num_threads" if num_threads else
             "SLURM's CPUs per task" if os.environ.get("SLURM_CPUS_PER_TASK") else "its share")
    return share


def sharing(sweep_dir: Path) -> int:
    """The trial processes of this sweep's live workers on this machine (this worker's included)."""
    here = socket.gethostname()
    total = 0
    for entry in live(sweep_dir, grace_seconds=0.0):
        processes = entry.get("processes")
        if entry.get("host") == here:
            total += processes if type(processes) is int and processes > 0 else 1
    return max(1, total)
