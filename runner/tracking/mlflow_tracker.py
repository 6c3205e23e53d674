"""`python -m runner logger=[tensorboard,mlflow]`: one MLflow run per runner run, through MLflow's own client.

mlflow is imported here only, and only when a run chose it. The client is stateless (REST calls, or a local
SQLite store), so each sync opens it anew; the run it writes to is the one recorded in the run's cursor
(tracking.json), so a resumed or requeued run goes on in the same MLflow run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig

log = logging.getLogger(__name__)

BATCH = 1000  # MLflow's most metrics in one log_batch request
PARAMS_BATCH = 100  # ... and params
NOT_A_KEY = re.compile(r"[^\w\-. /:]")  # MLflow's names: alphanumerics, underscores, dashes, periods, spaces, slashes


def local_store() -> tuple[str, str]:
    """logger.mlflow.tracking_uri=null: outputs/mlflow.db and outputs/mlartifacts under the working directory
    (`mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db` shows them)."""
    outputs = Path.cwd() / "outputs"
    outputs.mkdir(exist_ok=True)
    return f"sqlite:///{outputs / 'mlflow.db'}", (outputs / "mlartifacts").as_uri()


def tracking_uri_of(settings: DictConfig) -> str:
    return settings.tracking_uri or local_store()[0]


class MlflowTracker:
    """The run's MLflow run, created at the first sync (its id then kept in `state`) and found again after."""

    name = "MLflow"
    recorded = ("run_id", "tracking_uri", "experiment")  # what run.json says of it

    @staticmethod
    def batch_size() -> int:
        return BATCH

    def __init__(self, settings: DictConfig, labels: dict, state: dict):
        from mlflow.tracking import MlflowClient

        self.settings, self.state = settings, state
        self.uri = state["tracking_uri"]
        with self.connected():
            self.client = MlflowClient(tracking_uri=self.uri)
            if state.get("run_id") is None:
                experiment_id = self.experiment_id(labels["experiment"])
                run = self.client.create_run(experiment_id, run_name=labels["run_name"], tags=labels["tags"])
                state |= {"run_id": run.info.run_id, "experiment": labels["experiment"]}
                log.info("MLflow run %s in experiment %s at %s", run.info.run_id, labels["experiment"], self.uri)

    @contextlib.contextmanager
    def connected(self) -> Iterator[None]:
        """MLflow's HTTP requests give up after logger.mlflow.retries and request_timeout (MLflow's own default waits
        minutes on a server that is down); the variables are put back afterwards."""
        limits = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(max(1, self.settings.request_timeout))),
                  "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.settings.retries),
                  "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
        before = {key: os.environ.get(key) for key in limits}
        os.environ.update(limits)
        logging.getLogger("alembic").setLevel(logging.WARNING)  # a local store's schema set-up, line by line
        retries = logging.getLogger("urllib3.connectionpool")  # a warning for each retry: the sync says it once
        level = retries.level
        retries.setLevel(logging.ERROR)
        try:
            yield
        finally:
            retries.setLevel(level)
            for key, value in before.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def experiment_id(self, name: str) -> str:
        """The experiment named `name`, created if it is not there (a sweep's trials may race to create it)."""
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        artifacts = local_store()[1] if self.settings.tracking_uri is None else None
        try:
            return self.client.create_experiment(name, artifact_location=artifacts)
        except MlflowException:
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def send_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(key_of(key), value[:6000]) for key, value in params.items()]  # MLflow keeps 6000 characters
        for start in range(0, len(items), PARAMS_BATCH):
            with self.connected():
                self.client.log_batch(self.state["run_id"], params=items[start:start + PARAMS_BATCH])

    def send_points(self, points: list[tuple[str, int, float, float]]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(key_of(tag), value, int(wall_time * 1000), step) for tag, step, value, wall_time in points]
        with self.connected():
            self.client.log_batch(self.state["run_id"], metrics=metrics)

    def send_file(self, path: Path, folder: str) -> None:
        with self.connected():
            self.client.log_artifact(self.state["run_id"], str(path), artifact_path=folder)

    def close(self) -> None:
        """Nothing is held open between syncs."""


def key_of(name: str) -> str:
    """A TensorBoard tag or config key as an MLflow name (250 characters at most)."""
    return NOT_A_KEY.sub("_", name)[:250]
