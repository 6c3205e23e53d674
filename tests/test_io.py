"""The one atomic writer: a reader sees the old file or the new one, never half of one."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.common.io import write_atomic, write_csv_atomic, write_json_atomic, write_text_atomic


def test_written_files_read_back(tmp_path):
    write_json_atomic(tmp_path / "a" / "best.json", {"top1": 0.5})
    write_csv_atomic(tmp_path / "trials.csv", ["number", "value"], [[0, 1.5], [1, None]])
    write_text_atomic(tmp_path / "note.txt", "héllo\n")
    assert json.loads((tmp_path / "a" / "best.json").read_text()) == {"top1": 0.5}
    assert (tmp_path / "trials.csv").read_text().splitlines() == ["number,value", "0,1.5", "1,"]
    assert (tmp_path / "note.txt").read_text() == "héllo\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "note.txt", "trials.csv"]  # no temporary files


def test_a_failing_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "run.json"
    path.write_text("old")

    def half_then_fail(file):
        file.write(b"new but only ha")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_atomic(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_a_writer_killed_mid_write_leaves_the_old_file(tmp_path):
    """SIGKILL while half the new content is written: the name still holds the old content."""
    path = tmp_path / "best.json"
    path.write_text("old")
    script = (
        "import sys, time; from pathlib import Path; from runner.common.io import write_atomic\n"
        "def slow(file):\n"
        "    file.write(b'half'); file.flush(); print('writing', flush=True); time.sleep(60)\n"
        f"write_atomic(Path({str(path)!r}), slow)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    time.sleep(0.1)
    assert path.read_text() == "old"


def test_an_append_after_a_torn_line_starts_a_new_line(tmp_path, caplog):
    from runner.common.io import append_line, read_jsonl

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"a": 1}\n{"a": 2, "b"')  # a writer killed mid-line
    append_line(path, json.dumps({"a": 3}))
    assert read_jsonl(path) == [{"a": 1}, {"a": 3}]
    assert "line 2 is not a whole record" in caplog.text


def a_dead_pid() -> int:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(finished.stdout)


def test_temporary_files_of_dead_writers_are_removed_and_live_ones_kept(tmp_path, caplog):
    """A kill -9 during a save leaves .NAME.tmp-HOST-PID: removed once its writer is gone, never before."""
    import socket

    from runner.common.io import remove_stale_temporaries

    caplog.set_level("INFO")
    host = socket.gethostname()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead_file = tmp_path / f".epoch-0003.pt.tmp-{host}-{a_dead_pid()}"
        live_file = tmp_path / f".epoch-0004.pt.tmp-{host}-{live.pid}"
        other_host = tmp_path / f".epoch-0005.pt.tmp-elsewhere-{a_dead_pid()}"  # its writer may live on that host
        for path in (dead_file, live_file, other_host):
            path.write_bytes(b"x" * 1000)
        remove_stale_temporaries(tmp_path)
        assert not dead_file.exists() and live_file.exists() and other_host.exists()
        assert ".epoch-0003.pt.tmp" in caplog.text
    finally:
        live.kill()


def test_an_atomic_write_leaves_a_temporary_named_after_its_host_and_process(tmp_path):
    import os
    import socket

    seen = []
    write_atomic(tmp_path / "run.json", lambda file: seen.extend(p.name for p in tmp_path.iterdir()))
    assert seen == [f".run.json.tmp-{socket.gethostname()}-{os.getpid()}"]
