"""`python -m runner logger=[tensorboard,wandb]`: one Weights & Biases run per runner run, offline by default.

wandb is imported here only, and only when a run chose it. The W&B run is opened at the first sync of an attempt
and kept open until the attempt ends (a W&B run is a process of its own); a resumed or requeued attempt opens the
same run id again (kept in the run's cursor, tracking.json): offline, each attempt leaves a folder
RUN/wandb/offline-run-*-ID, and `wandb sync RUN/wandb/offline-run-*` sends them all to that one run.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import string
from itertools import groupby
from pathlib import Path

from omegaconf import DictConfig

log = logging.getLogger(__name__)

STEP = "global_step"  # every curve is drawn against the optimizer update it was written at, as in TensorBoard


class WandbTracker:
    """The run's W&B run: opened (or resumed by its id) in RUN/wandb/, closed at the end of the attempt."""

    name = "W&B"
    recorded = ("run_id", "project", "entity", "group", "mode")  # what run.json says of it

    def __init__(self, settings: DictConfig, labels: dict, state: dict, run_dir: Path):
        import wandb

        self.state, self.run_dir = state, run_dir
        state.setdefault("run_id", None)
        # W&B's own ids are 8 of [a-z0-9]; drawn with `secrets`, which leaves training's random streams alone
        run_id = state["run_id"] or "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        group = settings.group or labels.get("study")
        self.run = wandb.init(
            project=settings.project, entity=settings.entity, group=group, name=labels["run_name"],
            id=run_id, resume="allow", mode=settings.mode, dir=str(run_dir), tags=labels["wandb_tags"],
            reinit="create_new",
            settings=wandb.Settings(console="off", silent=True, save_code=False, disable_git=True,
                                    disable_job_creation=True, x_disable_stats=True, x_disable_meta=True,
                                    x_disable_machine_info=True))
        self.run.define_metric(STEP, hidden=True)
        self.run.define_metric("*", step_metric=STEP)
        state |= {"run_id": run_id, "project": settings.project, "entity": settings.entity, "group": group,
                  "mode": settings.mode}
        log.info("W&B run %s (%s, project %s) in %s", run_id, settings.mode, settings.project, self.run.dir)

    @staticmethod
    def batch_size() -> int:
        return 100_000  # one call: the points are logged one update at a time anyway

    def send_params(self, params: dict[str, str]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def send_points(self, points: list[tuple[str, int, float, float]]) -> None:
        """One history row per update: its tags' values and the update (points come in step order)."""
        for step, same_step in groupby(points, key=lambda point: point[1]):
            self.run.log({STEP: step, **{tag: value for tag, _, value, _ in same_step}})

    def send_file(self, path: Path, folder: str) -> None:
        """Copied into the W&B run's files (a link would show the file as it is at `wandb sync`, not as sent)."""
        copy = Path(self.run.dir) / folder / path.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
        self.run.save(str(copy), base_path=self.run.dir, policy="now")

    def close(self) -> None:
        """The run finished and W&B's service process stopped: a run reopened with the same id in this process (a
        second sync_run) would otherwise race the old one's closing and may lose its records (seen 1 in 4)."""
        import wandb

        self.run.finish()
        wandb.teardown()
        for path in (self.run_dir / "wandb").rglob("*"):  # W&B's links to its logs (one outside the run folder)
            if path.is_symlink():
                path.unlink()
        if self.state["mode"] == "offline":
            log.info("W&B run %s is offline: wandb sync %s sends it", self.state["run_id"],
                     self.run_dir / "wandb" / f"offline-run-*-{self.state['run_id']}*")
