"""The trackers' sync, after each checkpoint and at the end of `python -m runner logger=[tensorboard,mlflow,wandb]`.

Each sync sends what the run has written since the last one (sources.py: the tb/ scalars, the resolved config,
the eval/ files) and moves a cursor saved in the run folder (tracking.json: each tracker's run id and what it has
received), so nothing is sent twice and nothing is lost: a tracker that fails (a server that is down) costs one
warning, training goes on, and what it did not receive goes at the next sync; what is still not sent at the end
is listed in the log and in run.json (`trackers`), with the tracker's run id. Rank 0 alone syncs (runner/run.py).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from runner.common.io import write_json_atomic
from runner.tracking.settings import settings_of, trackers_of
from runner.tracking.sources import config_params, files_to_send, new_points, scalar_points

log = logging.getLogger(__name__)

CURSOR = "tracking.json"


class Tracking:
    """A run's trackers in this process (one attempt): `sync()` at each checkpoint, `finish()` at the end."""

    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.names = trackers_of(cfg.logger)
        self.open: dict[str, object] = {}  # kept between syncs: a W&B run lives as long as the attempt
        self.warned: set[str] = set()
        self.not_sent: dict[str, dict | None] = {}

    def sync(self) -> None:
        """Send each tracker what it has not received; a run refused before its run.json is left untouched."""
        if not (self.run_dir / "run.json").is_file():
            return
        cursor = read_cursor(self.run_dir)
        sources = {"root": self.run_dir, "params": config_params(self.cfg),
                   "scalars": scalar_points(self.run_dir / "tb"), "files": files_to_send(self.run_dir)}
        for name in self.names:
            self.not_sent[name] = self.sync_one(name, cursor, sources)
        record_in_run_json(self.run_dir, {name: {**{key: cursor[name].get(key) for key in tracker_class(name).recorded},
                                                 "not_sent": self.not_sent[name]} for name in self.names})

    def sync_one(self, name: str, cursor: dict, sources: dict) -> dict | None:
        """Send `name` what it has not received, saving the cursor as it goes; returns what is left (None: nothing)."""
        state = cursor.setdefault(name, {})
        try:
            tracker = self.open.get(name) or self.connect(name, state)
            self.open[name] = tracker
            write_json_atomic(self.run_dir / CURSOR, cursor)  # the run id, before anything else is sent
            send(tracker, state, sources, lambda: write_json_atomic(self.run_dir / CURSOR, cursor))
            return None
        except Exception as error:  # a tracker never stops training: what it missed goes at the next sync
            self.open.pop(name, None)
            said = log.debug if name in self.warned else log.warning
            self.warned.add(name)
            said("%s did not take this sync (%s): training goes on; what it has not received goes at the next sync",
                 tracker_class(name).name, reason(error))
            write_json_atomic(self.run_dir / CURSOR, cursor)
            return pending(state, sources)

    def connect(self, name: str, state: dict):
        """Open the tracker's run: the one in the cursor, or a new one (also when its address changed)."""
        settings = settings_of(self.cfg.logger, name)
        if name == "mlflow":
            from runner.tracking.mlflow_tracker import MlflowTracker, tracking_uri_of

            uri = tracking_uri_of(settings)
            if state.get("tracking_uri") not in (None, uri):
                if state.get("run_id") is not None:  # (without a run id, nothing had reached the old address)
                    log.warning("logger.mlflow.tracking_uri changed from %s to %s: a new MLflow run there, sent from "
                                "the start", state["tracking_uri"], uri)
                state.clear()
            state["tracking_uri"] = uri
            return MlflowTracker(settings, labels_of(self.cfg, self.run_dir), state)
        from runner.tracking.wandb_tracker import WandbTracker

        return WandbTracker(settings, labels_of(self.cfg, self.run_dir), state, self.run_dir)

    def finish(self) -> None:
        """The last sync, then each tracker closed; what is still not sent is listed (log and run.json)."""
        self.sync()
        for name, tracker in list(self.open.items()):
            try:
                tracker.close()
            except Exception as error:
                log.warning("%s could not close its run (%s): %s", tracker_class(name).name, type(error).__name__, error)
        self.open.clear()
        for name, left in self.not_sent.items():
            if left:
                log.warning("%s: %s of this run not sent (run.json says so under trackers); they stay in the run "
                            "folder: python -m runner.tracking %s sends them", tracker_class(name).name,
                            ", ".join(f"{count} {what}" for what, count in left.items() if count), self.run_dir)


def send(tracker, state: dict, sources: dict, save) -> None:
    """What `tracker` has not received, in order: params, scalars (in batches), files; `save` after each part."""
    sent_params = state.setdefault("params", {})
    fresh = {key: value for key, value in sources["params"].items() if key not in sent_params}
    if fresh:
        tracker.send_params(fresh)
        sent_params |= fresh
        save()
    sent_steps = state.setdefault("scalars", {})
    points, size = new_points(sources["scalars"], sent_steps), tracker.batch_size()
    for start in range(0, len(points), size):
        batch = points[start:start + size]
        tracker.send_points(batch)
        for tag, step, _, _ in batch:
            sent_steps[tag] = max(step, sent_steps.get(tag, step))
        save()
    sent_files = state.setdefault("files", {})
    for relative, fingerprint in sources["files"].items():
        if sent_files.get(relative) != fingerprint:
            folder = relative.rpartition("/")[0].lstrip(".")  # .hydra/ as hydra/: W&B leaves hidden folders out
            tracker.send_file(sources["root"] / relative, folder)
            sent_files[relative] = fingerprint
            save()


def reason(error: BaseException) -> str:
    """The first cause of `error` (the refused connection under MLflow's "API request failed"), in one short line."""
    while (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__
    said = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {said[-200:]}"


def pending(state: dict, sources: dict) -> dict:
    """How much `state`'s tracker has not received: params, points, files."""
    return {"params": sum(key not in state.get("params", {}) for key in sources["params"]),
            "points": len(new_points(sources["scalars"], state.get("scalars", {}))),
            "files": sum(state.get("files", {}).get(key) != fingerprint for key, fingerprint in sources["files"].items())}


def tracker_class(name: str):
    if name == "mlflow":
        from runner.tracking.mlflow_tracker import MlflowTracker

        return MlflowTracker
    from runner.tracking.wandb_tracker import WandbTracker

    return WandbTracker


def labels_of(cfg: DictConfig, run_dir: Path) -> dict:
    """What names the tracker's run: its experiment (MLflow), group (W&B: a sweep's study), name and tags."""
    study = cfg.sweep.study
    chosen = (cfg.logger.get("mlflow") or {}).get("experiment")
    tags = {"runner.name": cfg.name, "runner.run_dir": str(Path(run_dir).resolve())}
    if study is not None:
        tags |= {"runner.study": study, "runner.trial": str(cfg.sweep.trial)}
    run_name = f"{study}/trial-{cfg.sweep.trial}" if study is not None else f"{cfg.name}/{Path(run_dir).name}"
    return {"experiment": chosen or study or cfg.name, "study": study, "run_name": run_name, "tags": tags,
            "wandb_tags": [cfg.name]}


def read_cursor(run_dir: Path) -> dict:
    """tracking.json: per tracker, its run id and what it has received; {} before the first sync."""
    path = run_dir / CURSOR
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        log.warning("%s is unreadable: the trackers get everything again, in new runs", path)
        return {}


def record_in_run_json(run_dir: Path, trackers: dict) -> None:
    """run.json's `trackers`: each tracker's run id and what it has not received (None: everything sent)."""
    path = run_dir / "run.json"
    record = json.loads(path.read_text())
    if record.get("trackers") != trackers:
        write_json_atomic(path, {**record, "trackers": trackers})


def sync_run(cfg: DictConfig, run_dir: Path) -> dict[str, dict | None]:
    """One sync and close (after `python -m runner.evaluate`, or to send what a down server missed); returns
    what each tracker has not received."""
    tracking = Tracking(cfg, run_dir)
    tracking.finish()
    return tracking.not_sent
