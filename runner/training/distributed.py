"""Several processes: `torchrun --nproc_per_node=N -m runner ...` (NCCL on GPUs, gloo on CPUs).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `setup()` joins the process group from them.
Rank 0 alone writes logs, TensorBoard, checkpoints and the evaluation; the others train.
"""

from __future__ import annotations

import logging

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
        torch_dist.init_process_group(backend=backend)
    log.info("process %d of %d (%s, %s)", processes.rank, processes.world_size, backend, device)
    return device


def teardown(processes: Processes) -> None:
    if processes.active and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def all_sum(tensor: torch.Tensor, processes: Processes) -> torch.Tensor:
    """The sum over processes (the tensor itself in a single process)."""
    if processes.active:
        tensor = tensor.clone()
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
    return tensor


def any_process(flag: bool, processes: Processes, device: torch.device) -> bool:
    """True if the flag is set in any process (e.g. one of them received the stop signal)."""
    if not processes.active:
        return flag
    return bool(all_sum(torch.tensor(float(flag), device=device), processes) > 0)


def barrier(processes: Processes) -> None:
    if processes.active:
        torch_dist.barrier()


def gather(value, processes: Processes) -> list:
    """Every process's value, in rank order (collective: every process calls it); [value] in one process."""
    if not processes.active:
        return [value]
    gathered = [None] * processes.world_size
    torch_dist.all_gather_object(gathered, value)
    return gathered
