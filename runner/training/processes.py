"""Which process this is among torchrun's (`torchrun --nproc_per_node=N -m runner ...`), from the
environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK). No torch here: the settings' validation
asks it at every start; joining the process group is runner/training/distributed.py's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


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
