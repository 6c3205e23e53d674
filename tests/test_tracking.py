"""MLflow and W&B beside TensorBoard (runner/tracking/): `logger=[tensorboard,mlflow]`, `logger=[tensorboard,wandb]`.

MLflow is checked through its own REST API on a server this module starts on 127.0.0.1 (one for the module);
W&B through the offline run files it writes (records read with W&B's own protobuf messages).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from runner.common.errors import UserError
from tests.conftest import TINY, compose_config, run_cli

HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None
HAS_WANDB = importlib.util.find_spec("wandb") is not None
needs_mlflow = pytest.mark.skipif(not HAS_MLFLOW, reason='mlflow is not installed (pip install -e ".[mlflow]")')
needs_wandb = pytest.mark.skipif(not HAS_WANDB, reason='wandb is not installed (pip install -e ".[wandb]")')


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def server_starting(tmp_path_factory):
    """The module's MLflow server, started at once (it takes seconds) and waited for by `mlflow_server`."""
    if not HAS_MLFLOW:
        yield None
        return
    folder, port = tmp_path_factory.mktemp("mlflow_server"), free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", str(folder / "art")]
    with open(folder / "server.log", "w") as log_file:
        # without its job runner (seven more Python processes, each importing mlflow): the REST API is enough
        server = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, cwd=folder,
                                  env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    yield server, f"http://127.0.0.1:{port}", folder
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture
def mlflow_server(server_starting) -> str:
    """The server's URL, once it answers."""
    if server_starting is None:
        pytest.skip('mlflow is not installed (pip install -e ".[mlflow]")')
    server, url, folder = server_starting
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return url
        except OSError:
            assert server.poll() is None, (folder / "server.log").read_text()[-2000:]
            time.sleep(0.2)
    raise AssertionError("the MLflow server did not start in 120 s")


def rest(url: str, endpoint: str, **query) -> dict:
    with urllib.request.urlopen(f"{url}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}", timeout=10) as reply:
        return json.loads(reply.read())


def history(url: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m["step"], m["value"]) for m in rest(url, "metrics/get-history", run_id=run_id, metric_key=key)["metrics"])


def artifacts(url: str, run_id: str, path: str) -> set[str]:
    return {f["path"] for f in rest(url, "artifacts/list", run_id=run_id, path=path).get("files", [])}


def write_scalars(tb: Path, points: list[tuple[str, float, int]], suffix: str = "") -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tb), filename_suffix=suffix) as writer:
        for tag, value, step in points:
            writer.add_scalar(tag, value, step)


def constructed_run(run_dir: Path, overrides: list[str]):
    """A run folder as training and the evaluator leave it (tb/, eval/, run.json), and its config."""
    cfg = compose_config([*TINY, *overrides])
    (run_dir / "eval").mkdir(parents=True)
    write_scalars(run_dir / "tb", [("train/loss", 2.0, 1), ("train/loss", 1.5, 2), ("train/loss", 1.25, 3)])
    write_scalars(run_dir / "tb", [("eval/val/top1", 0.5, 3)], suffix=".eval")
    (run_dir / "eval" / "metrics.csv").write_text("checkpoint,split,top1\ncheckpoints/epoch-0001.pt,val,0.5\n")
    (run_dir / "eval" / "confusion.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (run_dir / "run.json").write_text(json.dumps({"status": "finished"}))
    return cfg


# --- settings ------------------------------------------------------------------------------------------------

def test_the_logger_group_selects_trackers_and_tensorboard_is_always_written():
    from runner.tracking.settings import trackers_of

    assert trackers_of(compose_config(TINY).logger) == []
    cfg = compose_config([*TINY, "logger=[tensorboard,mlflow,wandb]", "logger.wandb.project=p"])
    assert trackers_of(cfg.logger) == ["mlflow", "wandb"]
    assert cfg.logger.wandb.mode == "offline" and cfg.logger.wandb.project == "p"
    assert cfg.logger.mlflow.tracking_uri is None  # a local store under outputs/
    assert trackers_of(compose_config([*TINY, "logger=[mlflow]"]).logger) == ["mlflow"]


@pytest.mark.parametrize("tracker", ["mlflow", "wandb"])
def test_a_tracker_not_installed_is_refused_in_one_line_naming_the_extra(tracker, monkeypatch):
    from runner.config.schema import validate

    cfg = compose_config([*TINY, f"logger=[tensorboard,{tracker}]"])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == tracker else real(name, *a))
    with pytest.raises(UserError) as refused:
        validate(cfg, import_targets=False)
    assert "\n" not in str(refused.value)
    assert f'pip install -e ".[{tracker}]"' in str(refused.value) and f"logger=[tensorboard,{tracker}]" in str(refused.value)


def test_bad_tracker_settings_are_refused_naming_the_key(capsys):
    from runner.config.precheck import refuse_bad_command_line
    from runner.config.schema import validate
    from runner.tracking.settings import settings_of

    for line, said in ((["logger.mlflow.experiment=e"], "logger.mlflow.experiment is not a setting while logger.mlflow is null"),
                       (["logger=[tensorboard,mlflow]", "logger.mlflow.tracking_url=x"], "did you mean logger.mlflow.tracking_uri?"),
                       (["logger=[tensorboard,mlflow]", "logger.mlflow.retries=abc"], "logger.mlflow.retries='abc' must be")):
        with pytest.raises(SystemExit) as refused:
            refuse_bad_command_line("train", validate, [*TINY, *line])
        assert refused.value.code == 2 and said in capsys.readouterr().out
    whole = compose_config([*TINY, "logger.mlflow={experiment:e}"])  # the block given whole: the rest defaults
    validate(whole, import_targets=False)
    assert settings_of(whole.logger, "mlflow").experiment == "e" and settings_of(whole.logger, "mlflow").retries == 1
    with pytest.raises(UserError, match=r"logger\.mlflow\.retry is not a setting \(did you mean logger\.mlflow\.retries\?\)"):
        validate(compose_config([*TINY, "logger.mlflow={retry:2}"]), import_targets=False)

    with pytest.raises(UserError, match=r"logger\.wandb\.mode='cloud' is not known. Fix: logger\.wandb\.mode=offline"):
        validate(compose_config([*TINY, "logger=[tensorboard,wandb]", "logger.wandb.mode=cloud"]), import_targets=False)
    with pytest.raises(UserError, match=r"logger\.mlflow\.retries=-1 must be an integer >= 0"):
        validate(compose_config([*TINY, "logger=[tensorboard,mlflow]", "logger.mlflow.retries=-1"]), import_targets=False)


# --- what is sent: read from what is already written ---------------------------------------------------------

def test_scalars_come_from_every_event_file_and_only_new_points_are_sent(tmp_path):
    from runner.tracking.sources import new_points, scalar_points

    write_scalars(tmp_path, [("train/loss", 2.0, 1), ("train/loss", 1.5, 2)])
    write_scalars(tmp_path, [("eval/val/top1", 0.25, 2)], suffix=".eval")
    write_scalars(tmp_path, [("train/loss", 1.5, 2), ("train/loss", 1.0, 3)])  # a resumed attempt repeats step 2
    points = scalar_points(tmp_path)
    assert {tag: [(s, v) for s, v, _ in series] for tag, series in points.items()} == {
        "train/loss": [(1, 2.0), (2, 1.5), (3, 1.0)], "eval/val/top1": [(2, 0.25)]}
    fresh = new_points(points, {"train/loss": 2})
    assert sorted((tag, step, value) for tag, step, value, _ in fresh) == [("eval/val/top1", 2, 0.25), ("train/loss", 3, 1.0)]


def test_params_are_the_resolved_config_flattened():
    from runner.tracking.sources import config_params

    params = config_params(compose_config([*TINY, "optimizer.lr=0.02"]))
    assert params["optimizer.lr"] == "0.02" and params["trainer.epochs"] == "2"
    assert params["dataset.image_size"] == "[11, 13]" and params["model.num_classes"] == "7"  # resolved


# --- MLflow, through its REST API ----------------------------------------------------------------------------

@needs_mlflow
def test_mlflow_gets_params_metrics_and_files_once_grouped_by_study(mlflow_server, tmp_path):
    from runner.tracking.sync import sync_run

    run_dir = tmp_path / "run"
    cfg = constructed_run(run_dir, ["logger=[tensorboard,mlflow]", f"logger.mlflow.tracking_uri={mlflow_server}",
                                    "sweep.study=study-a", "sweep.trial=3"])
    sync_run(cfg, run_dir)
    sync_run(cfg, run_dir)  # nothing new: nothing sent twice
    run_id = json.loads((run_dir / "run.json").read_text())["trackers"]["mlflow"]["run_id"]
    run = rest(mlflow_server, "runs/get", run_id=run_id)["run"]
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["optimizer.lr"] == str(cfg.optimizer.lr) and params["trainer.epochs"] == "2"
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["runner.study"] == "study-a" and tags["runner.trial"] == "3"
    experiment = rest(mlflow_server, "experiments/get", experiment_id=run["info"]["experiment_id"])["experiment"]
    assert experiment["name"] == "study-a"
    assert history(mlflow_server, run_id, "train/loss") == [(1, 2.0), (2, 1.5), (3, 1.25)]
    assert history(mlflow_server, run_id, "eval/val/top1") == [(3, 0.5)]
    assert artifacts(mlflow_server, run_id, "eval") == {"eval/metrics.csv", "eval/confusion.png"}

    # the resumed run's next points: the same MLflow run
    write_scalars(run_dir / "tb", [("train/loss", 1.25, 3), ("train/loss", 1.0, 4)])
    sync_run(cfg, run_dir)
    assert json.loads((run_dir / "run.json").read_text())["trackers"]["mlflow"]["run_id"] == run_id
    assert history(mlflow_server, run_id, "train/loss") == [(1, 2.0), (2, 1.5), (3, 1.25), (4, 1.0)]


@needs_mlflow
def test_a_server_that_is_down_costs_one_warning_and_what_was_not_sent_goes_later(mlflow_server, tmp_path, caplog,
                                                                                   monkeypatch):
    from runner.tracking import mlflow_tracker
    from runner.tracking.__main__ import main as tracking_command
    from runner.tracking.sources import config_params
    from runner.tracking.sync import Tracking

    run_dir = tmp_path / "run"
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = constructed_run(run_dir, ["logger=[tensorboard,mlflow]", f"logger.mlflow.tracking_uri={dead}"])
    tracking = Tracking(cfg, run_dir)
    with caplog.at_level(logging.WARNING):
        tracking.sync()
        tracking.sync()
        tracking.finish()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "Connection refused" in warnings[0] and "training goes on" in warnings[0] and "not sent" in warnings[1], warnings
    said = json.loads((run_dir / "run.json").read_text())["trackers"]["mlflow"]
    assert said["run_id"] is None and said["tracking_uri"] == dead
    assert said["not_sent"] == {"params": len(config_params(cfg)), "points": 4, "files": 2}

    # the server is up, the run created, then it fails after the first batch of points: the rest goes next time
    cfg.logger.mlflow.tracking_uri = mlflow_server
    real, calls = mlflow_tracker.MlflowTracker.send_points, []

    def failing_second_batch(self, points):
        calls.append(len(points))
        if len(calls) == 2:
            raise ConnectionError("the server went away")
        real(self, points)

    monkeypatch.setattr(mlflow_tracker, "BATCH", 2)
    monkeypatch.setattr(mlflow_tracker.MlflowTracker, "send_points", failing_second_batch)
    Tracking(cfg, run_dir).finish()
    monkeypatch.setattr(mlflow_tracker.MlflowTracker, "send_points", real)
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    assert tracking_command([str(run_dir), f"logger.mlflow.tracking_uri={mlflow_server}"]) == 0  # all sent
    said = json.loads((run_dir / "run.json").read_text())["trackers"]["mlflow"]
    assert said["not_sent"] is None
    assert history(mlflow_server, said["run_id"], "train/loss") == [(1, 2.0), (2, 1.5), (3, 1.25)]
    assert history(mlflow_server, said["run_id"], "eval/val/top1") == [(3, 0.5)]


# --- W&B, through its offline run files ----------------------------------------------------------------------

def wandb_records(run_dir: Path) -> list:
    """Every record of every offline W&B run under run_dir/wandb, oldest first: the .wandb file is a LevelDB-style
    log (a 7-byte header, then 32 KiB blocks of records: crc32 4, length 2, type 1) of W&B's protobuf Records."""
    from wandb.proto import wandb_internal_pb2

    records = []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        data, offset, pending = path.read_bytes(), 7, b""
        assert data[:4] == b":W&B"
        while offset + 7 <= len(data):
            if 32768 - offset % 32768 < 7:  # a block's tail too short for a header is padding
                offset += 32768 - offset % 32768
                continue
            _, length, kind = struct.unpack("<IHB", data[offset:offset + 7])
            if kind == 0 and length == 0:
                break
            pending += data[offset + 7:offset + 7 + length]
            offset += 7 + length
            if kind in (1, 4):  # FULL or LAST
                record = wandb_internal_pb2.Record()
                record.ParseFromString(pending)
                records.append(record)
                pending = b""
    return records


def wandb_history(records) -> dict[str, list[tuple[int, float]]]:
    series = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            for key, value in row.items():
                if not key.startswith("_") and key != "global_step":
                    series.setdefault(key, []).append((row["global_step"], value))
    return series


@needs_wandb
def test_wandb_offline_run_has_config_history_and_files_and_continues_its_run(tmp_path):
    from runner.tracking.sync import sync_run

    run_dir = tmp_path / "run"
    cfg = constructed_run(run_dir, ["logger=[tensorboard,wandb]", "sweep.study=study-b"])
    sync_run(cfg, run_dir)
    write_scalars(run_dir / "tb", [("train/loss", 1.0, 4)])
    sync_run(cfg, run_dir)  # as a resumed run: a second offline folder of the same W&B run
    run_id = json.loads((run_dir / "run.json").read_text())["trackers"]["wandb"]["run_id"]
    folders = sorted(run_dir.glob("wandb/offline-run-*"))
    assert len(folders) == 2 and all(folder.name.endswith(f"-{run_id}") for folder in folders)
    records = wandb_records(run_dir)
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert {(r.run_id, r.run_group, r.project) for r in runs} == {(run_id, "study-b", "runner")}
    config = {item.key: json.loads(item.value_json) for r in runs for item in r.config.update}
    config |= {item.key: json.loads(item.value_json) for r in records if r.WhichOneof("record_type") == "config"
               for item in r.config.update}
    assert config["optimizer.lr"] == str(cfg.optimizer.lr)
    assert wandb_history(records) == {"train/loss": [(1, 2.0), (2, 1.5), (3, 1.25), (4, 1.0)], "eval/val/top1": [(3, 0.5)]}
    for name in ("eval/metrics.csv", "eval/confusion.png"):
        assert (folders[0] / "files" / name).read_bytes() == (run_dir / name).read_bytes()


# --- the real command: one tracker run across a resume -------------------------------------------------------

@pytest.mark.slow
@needs_mlflow
@needs_wandb
def test_a_run_and_its_resume_are_one_mlflow_run_and_one_wandb_run(mlflow_server, workdir):
    run_dir = workdir / "outputs" / "tracked"
    settings = [*TINY, "evaluate.after_training=true", "logger=[tensorboard,mlflow,wandb]", f"hydra.run.dir={run_dir}",
                f"logger.mlflow.tracking_uri={mlflow_server}"]
    first = run_cli(settings, workdir)
    assert first.returncode == 0, first.stderr[-3000:]
    trackers = json.loads((run_dir / "run.json").read_text())["trackers"]
    resumed = run_cli([*settings, "trainer.epochs=3"], workdir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = json.loads((run_dir / "run.json").read_text())["trackers"]
    assert [again[name]["run_id"] for name in ("mlflow", "wandb")] == [trackers[name]["run_id"] for name in ("mlflow", "wandb")]
    run_id = trackers["mlflow"]["run_id"]
    steps = [step for step, _ in history(mlflow_server, run_id, "train/epoch_loss")]
    assert steps == [3, 6, 9]  # 30 samples in learning batches of 12: 3 updates an epoch, each epoch once
    assert [step for step, _ in history(mlflow_server, run_id, "eval/val/top1")] == [3, 6, 9]
    assert {"eval/metrics.csv"} <= artifacts(mlflow_server, run_id, "eval")
    assert trackers["mlflow"]["not_sent"] is None and trackers["wandb"]["not_sent"] is None
    folders = sorted(run_dir.glob("wandb/offline-run-*"))
    assert len(folders) == 2 and all(folder.name.endswith(trackers["wandb"]["run_id"]) for folder in folders)
    assert not [path for path in run_dir.rglob("*") if path.is_symlink()]  # W&B's links to its logs are gone
    assert [step for step, _ in wandb_history(wandb_records(run_dir))["train/epoch_loss"]] == [3, 6, 9]
