"""A training job's link to its sweep trial: heartbeat, parameters, and pruning by checkpoint.

The `runner_optuna` sweeper fills `sweep.*` in each trial's config; `python -m runner` (training/job.py)
then opens the study through its storage, beats a heartbeat so a lost worker can be told from
a slow one, and, with a pruner, reports each checkpoint's validation metric to the study and
stops early when the pruner says so (recorded as PRUNED).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from omegaconf import DictConfig

from runner.common.study_storage import HEARTBEAT, make_pruner, storage_for

log = logging.getLogger("runner.sweep")


class TrialLink:
    def __init__(self, sweep: DictConfig):
        self.storage = storage_for(sweep.storage)
        self.trial_id = int(sweep.trial_id)
        self.number = int(sweep.trial)
        self.study = optuna.load_study(study_name=sweep.study, storage=self.storage)
        self.study.pruner = make_pruner(sweep.pruner, self.study.user_attrs.get("pruner_options"))  # the sweeper's
        self.trial = optuna.trial.Trial(self.study, self.trial_id)
        self.pruning = sweep.pruner != "none"
        self.record_host()
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, args=(float(sweep.heartbeat_seconds),), daemon=True)

    def record_host(self) -> None:
        """The machine whose disk holds the run folder: workers on several nodes without a shared filesystem
        each write their trials' folders on their own (the sweep's results say on which host)."""
        here = socket.gethostname()
        with contextlib.suppress(RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            self.storage.set_trial_system_attr(self.trial_id, "runner:host", here)
            self.storage.set_trial_user_attr(self.trial_id, "host", here)  # optuna-dashboard shows it

    def record(self) -> dict:
        """What run.json says of the trial: study, number and parameters."""
        return {"study": self.study.study_name, "trial": self.number, "params": self.trial.params}

    def __enter__(self) -> TrialLink:
        self._beat.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._beat.join()

    def _heartbeat(self, seconds: float) -> None:
        while True:
            self.storage.set_trial_system_attr(self.trial_id, HEARTBEAT, time.time())
            if self._stop.wait(seconds):
                return

    def pruning_callback(self, evaluate_checkpoint: Callable[[Path], float],
                         final_epoch: int) -> Callable[[Path, int], None] | None:
        """For the training loop: after each checkpoint, report its validation metric; stop if pruned.

        The checkpoint of the final epoch is reported but never pruned: the work is done, and a pruned
        trial's result would be left out of the best."""
        if not self.pruning:
            return None

        def on_checkpoint(path: Path, epoch: int) -> None:
            value = evaluate_checkpoint(path)
            self.trial.report(value, step=epoch)
            if epoch < final_epoch and self.trial.should_prune():
                raise optuna.TrialPruned(f"trial {self.number} pruned after epoch {epoch} (validation metric {value:.4f})")

        return on_checkpoint
