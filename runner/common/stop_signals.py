"""Stop signals caught from the first line of `python -m runner` to the last, acted on where stopping loses nothing.

    #SBATCH --signal=B:USR1@120        (scripts/slurm/*.sbatch)

SLURM's warning before a time limit (USR1), SIGTERM and Ctrl-C come whenever they come: during the
imports, the data screening, an epoch, a sweep between two trials, the evaluation after the last
epoch. The entry catches them first thing (`catch_from_now_on`); the handler only remembers the
signal, and the code acts on it at its safe points: the training loop after an optimizer update
(a mid-epoch checkpoint), the job after the last epoch (before the evaluation, which the rerun
does), the sweeper between trials (it requeues the worker). A second Ctrl-C stops at once.
Where the work so far is saved, `Preempted` is raised, and under SLURM the job requeues itself
(`scontrol requeue`): the requeued job, in the same run directory, goes on from there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Iterator

log = logging.getLogger("runner.common.stop_signals")

DEFAULT = ("SIGUSR1", "SIGTERM")  # trainer.stop_signals' default; Ctrl-C (SIGINT) is always caught


class StopRequest:
    """The first stop signal received (a flag the safe points poll), and the handlers that set it."""

    def __init__(self):
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def catch(self, names) -> list[int]:
        """Catch these signals (and SIGINT) from now on; returns the ones not caught before."""
        added = []
        for name in {*names, "SIGINT"}:
            number = getattr(signal, name)
            if number not in self._previous:
                self._previous[number] = signal.signal(number, self._handle)
                added.append(number)
        return added

    def release(self, numbers: list[int]) -> None:
        for number in numbers:
            signal.signal(number, self._previous.pop(number))

    def _handle(self, number, frame) -> None:
        name = signal.Signals(number).name
        if name == "SIGINT" and self.received == "SIGINT":
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        if self.received is None:
            self.received = name
            if name == "SIGINT":
                log.warning("Ctrl-C: stopping at the next safe point (training: after this step, with a "
                            "checkpoint; evaluation: after this checkpoint); Ctrl-C again stops at once")
            else:
                log.warning("received %s: stopping at the next safe point (training: after this step, with a "
                            "checkpoint; evaluation: after this checkpoint)", name)


_request = StopRequest()  # the process's one request: a signal during start-up is still there in the loop


def catch_from_now_on(names=DEFAULT) -> None:
    """The entry's first line: catch the stop signals for the rest of the process."""
    _request.catch(names)


def ignore_from_now_on() -> None:
    """The entry's last line: the work is done or saved, so a late stop signal has nothing to stop. (Python
    puts its own handlers back to the default as it shuts down, and the default of USR1 kills: a warning in
    those last moments would turn a finished job into a failed one.)"""
    for number in list(_request._previous):
        signal.signal(number, signal.SIG_IGN)


def received() -> str | None:
    """The stop signal received so far in this process, or None."""
    return _request.received


@contextlib.contextmanager
def caught(names) -> Iterator[StopRequest]:
    """The stop request while training: these signals caught, and released after unless the entry caught them
    (a process that runs several jobs in a row, as the tests do, starts each with a fresh request)."""
    fresh = not _request._previous  # no entry caught them: a job of its own (the tests run several in a row)
    added = _request.catch(names)
    if fresh:
        _request.received = None
    try:
        yield _request
    finally:
        _request.release(added)


class Preempted(Exception):
    """Stopped at a safe point after a stop signal, with the work so far saved (a checkpoint, the evaluation's rows)."""

    def __init__(self, signal_name: str, checkpoint: str, step: int, moment: str | None = None):
        by = "Ctrl-C" if signal_name == "SIGINT" else signal_name
        saved = f"checkpoint {checkpoint} written" if checkpoint != "none" else "nothing new to save"
        super().__init__(f"stopped by {by} {moment or f'at step {step}'}: {saved}")
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
