"""Run folders: their names (`${run_id:}` in conf/train.yaml) and paths stored relative to them.

A run directory holds everything about a run, and the paths stored inside it are relative to
it, so it can be moved or copied to another machine and still be evaluated.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path


def relative(path: Path, run_dir: Path) -> str:
    """`path` relative to `run_dir` when it lies inside it, else its absolute path."""
    try:
        return str(Path(path).resolve().relative_to(Path(run_dir).resolve()))
    except ValueError:
        return str(Path(path).resolve())


def tensorboard_folder(run_dir: Path) -> str:
    """The run's tb/ folder for a SummaryWriter, refused in one line when it (or a folder on the way) is a
    symbolic link: TensorBoard would write its event files wherever the link points."""
    from runner.common.io import refuse_links

    folder = Path(run_dir) / "tb"
    refuse_links(folder, root=run_dir)
    return str(folder)


def run_id() -> str:
    """The run folder's name (`${run_id:}` in conf/train.yaml), the same for every process of one run.

    Under SLURM the job id (a requeued job finds its own checkpoints); under torchrun the start
    time of torchrun's agent process (shared by all its workers); otherwise the current time.
    """
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"slurm-{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    if os.environ.get("SLURM_JOB_ID"):
        return f"slurm-{os.environ['SLURM_JOB_ID']}"
    started = datetime.now()
    if "LOCAL_RANK" in os.environ:  # a torchrun worker: name the run after its agent's start
        started = process_start_time(os.getppid()) or started
        return agreed_by_every_node(started.strftime("%Y-%m-%d_%H-%M-%S") + f"_torchrun-{os.getppid()}")
    # milliseconds: runs started together (a shell loop with &) must not share a folder
    return started.strftime("%Y-%m-%d_%H-%M-%S.%f")[:-3]


def agreed_by_every_node(proposed: str) -> str:
    """The first name any process of this torchrun job proposed, agreed through the job's own key-value
    store (torchrun's agent on node 0 hosts it at MASTER_ADDR:MASTER_PORT): each node's agent has its own
    pid and start time, and `--nnodes=2` without SLURM must still make one run folder, not one per node."""
    address, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not (address and port and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"):
        return proposed
    from torch.distributed import TCPStore

    store = TCPStore(address, int(port), is_master=False, wait_for_workers=False)
    key = f"runner/run_id/{os.environ.get('TORCHELASTIC_RUN_ID', '')}"
    return store.compare_set(key, "", proposed).decode()


def process_start_time(pid: int) -> datetime | None:
    """When a process started (Linux /proc); None where that cannot be read."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK"))
