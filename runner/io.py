"""The one way the project rewrites a file, and the one file lock.

Checkpoints, `run.json`, `eval/best.json`, `eval/metrics.csv`, `trials.csv` and every other
file that is written again while someone may read it go through `write_atomic`: a temporary
file in the same folder, flushed and fsynced, then `os.replace`d over the name and the folder
fsynced, so a crash at any moment leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import logging
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

TEMPORARY = ".tmp-"  # .NAME.tmp-HOST-PID: a write in progress, or one that was killed


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call write(file) on a temporary file beside `path`, then put it in place in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, of=path.name)
    temporary = path.with_name(f".{path.name}{TEMPORARY}{socket.gethostname()}-{os.getpid()}")
    try:
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # make the rename itself durable
    finally:
        os.close(folder)


def remove_stale_temporaries(folder: Path, of: str | None = None) -> None:
    """Delete temporary files of writers on this host that are no longer alive (a kill -9 mid-write).

    A writer's temporary file is `.NAME.tmp-HOST-PID`: one whose process still runs, or that was
    written on another host (whose processes this one cannot see), is never touched.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    host = socket.gethostname()
    for path in folder.glob(f".{of or '*'}{TEMPORARY}*"):
        writer_host, _, pid = path.name.rsplit(TEMPORARY, 1)[1].rpartition("-")
        if writer_host != host or not pid.isdigit() or process_alive(int(pid)):
            continue
        size = path.stat().st_size
        path.unlink(missing_ok=True)
        log.info("removed %s (%.1f MB), left by a writer that stopped mid-write (process %s)", path, size / 1e6, pid)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda file: file.write(text.encode()))


def write_json_atomic(path: Path, value) -> None:
    write_text_atomic(path, json.dumps(value, indent=2, default=str) + "\n")


def write_csv_atomic(path: Path, header: list[str], rows: list[list]) -> None:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())


def append_line(path: Path, line: str) -> None:
    """Append one whole line in one write; after a torn last line (a writer killed mid-line) start a new one."""
    path = Path(path)
    data = line.rstrip("\n").encode() + b"\n"
    if path.exists() and path.stat().st_size > 0:
        with open(path, "rb") as file:
            file.seek(-1, os.SEEK_END)
            if file.read(1) != b"\n":
                data = b"\n" + data
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, data)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file; a line that does not parse (torn by a kill) is skipped with a warning."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s line %d is not a whole record (a writer stopped mid-line?): skipped", path, number)
    return records


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an flock on `path` (created, with its folder, if missing) for the duration of the block.

    Between processes on one machine or one shared filesystem: one evaluator per run, one
    sweep worker at a time asking the study for trials.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
