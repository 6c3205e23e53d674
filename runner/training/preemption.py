"""Stopping cleanly on a signal: SLURM's warning before a time limit or preemption, SIGTERM, or Ctrl-C.

    #SBATCH --signal=B:USR1@120        (scripts/slurm/train.sbatch)

On `trainer.stop_signals` the training loop finishes its current optimizer step, writes a
complete checkpoint and stops; under SLURM the job then requeues itself (`scontrol requeue`)
and the requeued job, in the same run directory, resumes from that checkpoint.
"""

from __future__ import annotations

import logging
import os
import subprocess

log = logging.getLogger("runner.training.preemption")


class Preempted(Exception):
    """Training stopped on a signal after writing a checkpoint."""

    def __init__(self, signal_name: str, checkpoint: str, step: int, moment: str | None = None):
        by = "Ctrl-C" if signal_name == "SIGINT" else signal_name
        super().__init__(f"stopped by {by} {moment or f'at step {step}'}: checkpoint {checkpoint} written")
        self.signal_name, self.checkpoint, self.step = signal_name, checkpoint, step
        self.requeued = False

    @property
    def by_user(self) -> bool:
        """Ctrl-C: the user stopped the run (not a scheduler): no requeue, status "interrupted"."""
        return self.signal_name == "SIGINT"


def requeue_slurm_job() -> bool:
    """Ask SLURM to requeue this job (it restarts in the same run directory); False outside SLURM."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return False
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    target = f"{array_job}_{array_task}" if array_job and array_task else job
    result = subprocess.run(["scontrol", "requeue", target], capture_output=True, text=True)
    if result.returncode != 0:
        log.error("scontrol requeue %s failed: %s", target, result.stderr.strip())
        return False
    log.warning("requeued SLURM job %s: it will resume from the checkpoint", target)
    return True
