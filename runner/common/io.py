"""The one way the project rewrites a file, and the one file lock.

Checkpoints, `run.json`, `eval/best.json`, `eval/metrics.csv`, `trials.csv` and every other
file that is written again while someone may read it go through `write_atomic`: a temporary
file in the same folder, flushed and fsynced, then `os.replace`d over the name and the folder
fsynced, so a crash at any moment leaves the old file or the new one, never half of one.

No writer here follows a symbolic link: not the file itself, and not a folder between it and the
run folder that holds it (`refuse_links`). A link planted in a run folder (eval/.lock pointing at
someone's file, tb/ at another disk) is refused in one line, and nothing outside the run changes.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import logging
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from runner.common.errors import UserError

log = logging.getLogger(__name__)

TEMPORARY = ".tmp-"  # .NAME.tmp-HOST-PID: a write in progress, or one that was killed


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call write(file) on a temporary file beside `path`, then put it in place in one step."""
    path = Path(path)
    refuse_links(path)
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
    refuse_links(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = line.rstrip("\n").encode() + b"\n"
    descriptor = open_unlinked(path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
    try:
        size = os.fstat(descriptor).st_size
        if size > 0 and os.pread(descriptor, 1, size - 1) != b"\n":
            data = b"\n" + data
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
    path = Path(path)
    refuse_links(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = open_unlinked(path, os.O_RDWR | os.O_CREAT)  # never truncated: the file may hold a note
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


# ---------------------------------------------------------------------------------------------
# symbolic links


RUN_FOLDER_MARKS = ("run.json", ".hydra")  # what `python -m runner` puts in a run folder first


def open_unlinked(path: Path, flags: int, mode: int = 0o644) -> int:
    """os.open that refuses a symbolic link at `path` itself (O_NOFOLLOW), even one made since the check."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UserError(link_message(Path(path), None)) from None
        raise


def refuse_links(path: Path, root: Path | None = None) -> None:
    """Raise a UserError if writing `path` would go through a symbolic link: `path` itself, or a folder
    between it and `root` (the run folder; by default the nearest enclosing one, see `enclosing_run_folder`).

    A run folder that is itself a link (outputs/latest -> ...) is written as usual: the user made it.
    """
    path = Path(os.path.abspath(path))
    root = enclosing_run_folder(path) if root is None else Path(os.path.abspath(root))
    if os.path.islink(path):
        raise UserError(link_message(path, root))
    if root is None or root not in path.parents:
        return
    for folder in path.parents:
        if folder == root:
            return
        if os.path.islink(folder):
            raise UserError(link_message(folder, root))


def enclosing_run_folder(path: Path) -> Path | None:
    """The run folder `path` lies in: the nearest folder above it with a run.json or .hydra/ that is not itself
    a link inside another run folder (eval -> OTHER_RUN is a link inside this run, not a run of its own)."""
    nearest = None
    for folder in Path(os.path.abspath(path)).parents:
        if not any(os.path.lexists(folder / mark) for mark in RUN_FOLDER_MARKS):
            continue
        if not os.path.islink(folder):
            return folder
        nearest = nearest or folder  # a linked run folder: the run, unless a real one encloses it
    return nearest


def link_message(link: Path, root: Path | None) -> str:
    try:
        target = os.readlink(link)
    except OSError:
        target = "?"
    where = f" inside the run folder {root}" if root is not None else ""
    kind = "folder" if os.path.isdir(link) else "file"
    return (f"{link} is a symbolic link (to {target}){where}: runner writes nothing through a link, so nothing was "
            f"written. Fix: replace the link with a real {kind} (rm {link}), or use another folder")
