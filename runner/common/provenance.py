"""Provenance: what ran, from which code, where. Written by `python -m runner` into RUN/run.json.

"If it's worth running, it's worth committing": the log opens with the git commit, branch and
dirty status; a dirty tree also leaves `git.diff` (tracked changes against HEAD) in the run
directory and its untracked files in run.json, so a result can be traced to the exact code.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from runner.common.errors import UserError
from runner.common.io import write_json_atomic, write_text_atomic

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def git_state(directory: Path) -> dict | None:
    """Commit, describe, branch, dirty flag, diff and untracked files; None outside a repository."""
    try:
        import git  # gitpython needs the git executable; without it this import fails
    except ImportError as error:
        log.warning("git is not available (%s): the run will not record its code version", error)
        return None
    try:
        repo = git.Repo(directory, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        log.warning("%s is not inside a git repository: the run will not record its code version", directory)
        return None
    try:
        commit = repo.head.commit.hexsha
        describe = repo.git.describe("--always", "--dirty")
        diff = repo.git.diff("HEAD")
    except ValueError:  # a repository without commits
        commit, describe, diff = None, None, repo.git.diff("--cached")
    branch = None if repo.head.is_detached else repo.active_branch.name
    untracked = repo.untracked_files
    return {
        "root": str(repo.working_tree_dir),
        "commit": commit,
        "describe": describe,
        "branch": branch,
        "dirty": bool(diff) or bool(untracked),
        "untracked": untracked,
        "diff": diff,
    }


def record_git(run_dir: Path, cwd: Path, require_clean: bool) -> dict | None:
    """Log the code version, write git.diff for a dirty tree; refuse a dirty tree if asked to."""
    state = git_state(cwd)
    if require_clean:
        require_committed_code(state, cwd)
    if state is None:
        return None
    log.info("git: commit %s (%s) on branch %s, %s", state["commit"], state["describe"],
             state["branch"], "DIRTY" if state["dirty"] else "clean")
    if state["dirty"]:
        log.warning(
            "the git tree has uncommitted changes: this run may not be reproducible from commit %s "
            "(tracked changes saved to git.diff, %d untracked files listed in run.json)",
            state["commit"], len(state["untracked"]),
        )
        if state["diff"]:
            write_text_atomic(run_dir / "git.diff", state["diff"] + "\n")
    return {key: value for key, value in state.items() if key != "diff"}


def require_committed_code(state: dict | None, cwd: Path) -> None:
    """require_clean_git=true promises a run from committed code: refuse whatever cannot keep that promise."""
    if state is None:
        raise UserError(f"require_clean_git=true but {cwd} is not inside a git repository (or git is not "
                        "installed): the run could not be traced to a commit. Fix: run from a git checkout, "
                        "or set require_clean_git=false")
    if state["commit"] is None:
        raise UserError(f"require_clean_git=true but the repository at {state['root']} has no commit yet. "
                        "Fix: commit the code first, or set require_clean_git=false")
    if state["dirty"]:
        raise UserError(
            f"the git tree at {state['root']} has uncommitted changes and require_clean_git=true. "
            "Fix: commit or stash them (git status), or set require_clean_git=false"
        )


def environment(device: torch.device) -> dict:
    """Versions, device and host: enough to tell two machines' results apart."""
    # torch here, not at the top: results.py imports this module for now(), and the sweeper plugin imports
    # results at every start, --help and Tab completion included
    import torch
    import torchvision

    env = {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "slurm": {key: value for key, value in os.environ.items() if key.startswith("SLURM_")},
        "command": [sys.executable, *sys.argv],
    }
    return env


def now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="milliseconds")


def write_run_json(run_dir: Path, record: dict) -> None:
    """run.json: this attempt's record; earlier attempts (before a resume) are kept in `attempts`."""
    path = run_dir / "run.json"
    attempts, kept = [], {}
    if path.exists():
        try:
            previous = json.loads(path.read_text())
            attempts = previous.get("attempts", [])
            kept = {"trackers": previous["trackers"]} if "trackers" in previous else {}  # MLflow/W&B run ids
            if previous.get("start_time") != record.get("start_time"):
                attempts.append({k: previous.get(k) for k in ("start_time", "end_time", "status", "resumed_from")})
        except json.JSONDecodeError:
            log.warning("run.json was unreadable; starting a new one")
    write_json_atomic(path, {**kept, **record, "attempts": attempts})
