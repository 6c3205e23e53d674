"""Several processes: `torchrun --nproc_per_node=N -m runner ...` (NCCL on GPUs, gloo on CPUs).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `setup()` joins the process group from them.
Rank 0 alone writes logs, TensorBoard, checkpoints and the evaluation; the others train.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

import torch
import torch.distributed as torch_dist

from runner.training.processes import SINGLE, Processes, from_environment  # noqa: F401 (this module's API)

log = logging.getLogger("runner.distributed")


def setup(processes: Processes, device: torch.device) -> torch.device:
    """Join the process group; each process gets its own GPU (cuda:LOCAL_RANK) when on CUDA."""
    if not processes.active:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", processes.local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend=backend, timeout=collective_timeout())
    global _control
    _control = torch_dist.new_group(backend="gloo", timeout=WAIT_FOR_RANK_0)
    log.info("process %d of %d (%s, %s)", processes.rank, processes.world_size, backend, device)
    return device


# The control group: flags and waits on the CPU (gloo), apart from the training's collectives on the device.
# Its waits cover rank 0's evaluations, which take as long as the validation set needs, so its timeout is long.
WAIT_FOR_RANK_0 = timedelta(days=7)
_control = None


def collective_timeout() -> timedelta | None:
    """RUNNER_DIST_TIMEOUT_S: how long a training collective may wait for a process that hangs (torch's
    default, None: 10 minutes under NCCL, 30 under gloo)."""
    seconds = os.environ.get("RUNNER_DIST_TIMEOUT_S")
    return timedelta(seconds=float(seconds)) if seconds else None


def teardown(processes: Processes) -> None:
    """Destroy every group and drop this module's reference to the control group: a group still referenced
    is destroyed at interpreter exit, where gloo's threads abort the finished process (torchrun then reports
    the run failed)."""
    global _control
    if processes.active and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
    _control = None


def all_sum(tensor: torch.Tensor, processes: Processes) -> torch.Tensor:
    """The sum over processes (the tensor itself in a single process)."""
    if processes.active:
        tensor = tensor.clone()
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
    return tensor


def any_process(flag: bool, processes: Processes) -> bool:
    """True if the flag is set in any process (one of them received the stop signal, rank 0's evaluator says
    stop early). A CPU tensor in the control group: no host-device sync, no timeout while rank 0 evaluates."""
    if not processes.active:
        return flag
    tensor = torch.tensor(float(flag))
    torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM, group=_control)
    return bool(tensor > 0)


def barrier(processes: Processes) -> None:
    """Wait for every process (the others wait while rank 0 evaluates, for as long as that takes)."""
    if processes.active:
        torch_dist.barrier(group=_control)


def gather(value, processes: Processes) -> list:
    """Every process's value, in rank order (collective: every process calls it); [value] in one process."""
    if not processes.active:
        return [value]
    gathered = [None] * processes.world_size
    torch_dist.all_gather_object(gathered, value)
    return gathered
