"""Several processes: `torchrun --nproc_per_node=N -m runner ...` (NCCL on GPUs, gloo on CPUs).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `setup()` joins the process group from them.
Rank 0 alone writes logs, TensorBoard, checkpoints and the evaluation; the others train.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

log = logging.getLogger("runner.distributed")


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


SINGLE = Processes()


def from_environment() -> Processes:
    """This process's place among torchrun's processes (a single process without torchrun)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return SINGLE
    return Processes(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))


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
