"""Where and how the numbers are computed: device, threads, precision, seeding. Shared by `python -m runner`,
`python -m runner.evaluate` and the checks."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

from runner.common.errors import UserError


def pick_device(name: str, key: str = "device") -> torch.device:
    """`auto`: cuda, then mps, then cpu; a named device that is not there is a UserError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{key}={name} but no CUDA GPU is visible. Fix: {key}=auto or {key}=cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{key}=mps but MPS is not available. Fix: {key}=auto or {key}=cpu")
    return torch.device(name)


def native_bf16() -> bool:
    """bf16 in the GPU's hardware (Ampere and newer), not emulated: emulated bf16 is slower than fp16."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # a torch without the argument reports native support only
        return torch.cuda.is_bf16_supported()


def autocast_dtype(precision, device: torch.device, key: str = "precision") -> torch.dtype | None:
    """The autocast dtype for a precision setting on this device; None means plain fp32."""
    precision = str(precision)
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if native_bf16() else torch.float16
    if precision == "16" and device.type != "cuda":
        raise UserError(
            f"{key}=16 needs a CUDA GPU (fp16 training uses a GradScaler), not {device}. "
            f"Fix: {key}=bf16 or {key}=32"
        )
    return {"32": None, "bf16": torch.bfloat16, "16": torch.float16}[precision]


def available_cores() -> int:
    """CPU cores this process may use: SLURM's CPUs for the task (its share already), else the affinity mask
    shared by the trials that a sweep's workers run on this machine at once (RUNNER_WORKERS_ON_HOST, which
    the sweeper sets for each trial: runner/sweep/workers.py); then by the processes torchrun started here."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit():
        cores = int(slurm)
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        sharers = os.environ.get("RUNNER_WORKERS_ON_HOST", "")
        cores //= int(sharers) if sharers.isdigit() and int(sharers) > 0 else 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def use_threads(setting: int | None) -> int:
    """torch's intra-op threads: the setting, or the cores available (more threads than cores
    thrash: on a shared 2-core machine 2 threads ran the default MLP step 48x slower than 1)."""
    threads = setting or available_cores()
    torch.set_num_threads(threads)
    return threads


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True


@contextlib.contextmanager
def random_state_kept():
    """Run what sits between training updates (evaluation, checks, pruning, figures) without touching
    the training's random streams: Python's, NumPy's, torch's CPU and every CUDA generator are put back.

    A checkpoint saves these streams; a resumed run skips what already ran (an evaluation whose row
    exists), so anything that drew from them would make the resumed run differ from a straight one.
    """
    python, numpy_state = random.getstate(), np.random.get_state()
    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda_devices):
        try:
            yield
        finally:
            random.setstate(python)
            np.random.set_state(numpy_state)
