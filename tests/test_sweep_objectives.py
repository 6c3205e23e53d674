"""Multi-objective sweeps: hydra.sweeper.objectives=[top1,parameters] -> a Pareto front in
optimization_results.yaml, trials.csv and pareto_front.png."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from runner.common.errors import UserError
from runner.sweep import objectives
from tests.conftest import run_cli
from tests.test_sweep import load, sweep_args


def test_objectives_and_their_directions():
    assert objectives.parse([], "top1", "auto", "auto") == (["top1"], ["maximize"])
    assert objectives.parse([], "loss", "auto", "auto") == (["loss"], ["minimize"])
    assert objectives.parse(["top1", "parameters", "train_seconds"], "top1", "auto", "auto") == (
        ["top1", "parameters", "train_seconds"], ["maximize", "minimize", "minimize"])
    assert objectives.parse(["ece", "top5:min"], "top1", "auto", "auto") == (["ece", "top5"], ["minimize", "minimize"])
    with pytest.raises(UserError, match=r"'speed', which is not measured. Fix: one of top1.*parameters"):
        objectives.parse(["top1", "speed"], "top1", "auto", "auto")
    with pytest.raises(UserError, match=r"'top1:up'. Fix: top1:max or top1:min"):
        objectives.parse(["top1:up"], "top1", "auto", "auto")


def test_objective_values_come_from_the_runs_folder(tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "best.json").write_text(json.dumps({"checkpoint": "checkpoints/epoch-0001.pt", "metric": "top1",
                                                             "value": 0.5, "metrics": {"top1": 0.5, "loss": 1.25}}))
    record = {"status": "finished", "parameters": 1234, "start_time": "2026-12-01T10:00:00.000+00:00",
              "end_time": "2026-12-01T10:00:30.500+00:00",
              "attempts": [{"start_time": "2026-12-01T09:00:00.000+00:00", "end_time": "2026-12-01T09:00:10.000+00:00"},
                           {"start_time": "2026-12-01T09:30:00.000+00:00", "end_time": None},  # killed: no end
                           {"start_time": "yesterday", "end_time": "today"}, 3]}  # not times, not an attempt: left out
    (tmp_path / "run.json").write_text(json.dumps(record))
    assert objectives.values_of(tmp_path, ["top1", "parameters", "train_seconds", "loss"]) == [0.5, 1234.0, 40.5, 1.25]
    (tmp_path / "run.json").write_text(json.dumps({**record, "status": "failed: ..."}))
    assert objectives.values_of(tmp_path, ["top1"]) is None


@pytest.mark.slow
def test_a_two_objective_sweep_writes_its_pareto_front(workdir):
    sweep_dir = workdir / "sweep"
    result = run_cli(sweep_args(sweep_dir, "model.channels=choice(2,4,8)", "optimizer.lr=choice(1e-3,1e-2)",
                                "hydra.sweeper.objectives=[top1,parameters]", "hydra.sweeper.n_trials=4",
                                "hydra.sweeper.n_jobs=2"), cwd=workdir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    study = load(sweep_dir)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    for trial in study.trials:
        run_dir = sweep_dir / trial.system_attrs["runner:run_dir"]
        best = json.loads((run_dir / "eval" / "best.json").read_text())
        assert trial.values == [best["metrics"]["top1"], json.loads((run_dir / "run.json").read_text())["parameters"]]
    by_channels = {t.params["model.channels"]: t.values[1] for t in study.trials}
    assert sorted(by_channels.values()) == [by_channels[c] for c in sorted(by_channels)]  # more channels, more weights
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    front = {t.number for t in study.best_trials}
    assert {entry["trial"] for entry in results["pareto_front"]} == front
    assert all(set(entry["values"]) == {"top1", "parameters"} and entry["reproduce"].startswith("python -m runner")
               for entry in results["pareto_front"])
    with open(sweep_dir / "trials.csv") as file:
        rows = list(csv.DictReader(file))
    assert [float(r["parameters"]) for r in rows] == [t.values[1] for t in study.trials]
    assert (sweep_dir / "pareto_front.png").stat().st_size > 10_000
    assert "Pareto front" in result.stdout


def test_pruning_a_multi_objective_sweep_is_refused_in_one_line(workdir):
    result = run_cli(sweep_args(workdir / "sweep", "model.channels=choice(2,4)", "hydra.sweeper.pruner=median",
                                "hydra.sweeper.objectives=[top1,parameters]"), cwd=workdir)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "pruning needs a single objective" in result.stdout and "Fix: hydra.sweeper.pruner=none" in result.stdout
    assert not (workdir / "sweep" / "trial_0000").exists()


@pytest.mark.parametrize(("file", "text"), [("run.json", "[1, 2]"), ("eval/best.json", "[1, 2]"),
                                            ("run.json", '"finished"'), ("eval/best.json", '{"metrics": [0.5]}'),
                                            ("run.json", '{"status": "finished", "parameters": "many"}'),
                                            ("run.json", '{"status": ["finished"]}'),
                                            ("eval/best.json", "\udcff not utf-8")])
def test_a_run_folder_whose_files_are_of_another_shape_has_no_values_and_says_why(tmp_path, file, text, caplog):
    """A lost trial's folder (fail_lost_trials) or a finished trial's (tell) read by the sweeper: a run.json or
    best.json of another shape (a JSON list, a string) is no value and one warning naming the file, not a crash."""
    good_run = {"status": "finished", "parameters": 1234, "start_time": "2026-12-01T10:00:00.000+00:00",
                "end_time": "2026-12-01T10:00:30.500+00:00"}
    good_best = {"checkpoint": "checkpoints/epoch-0001.pt", "metric": "top1", "value": 0.5,
                 "metrics": {"top1": 0.5, "loss": 1.25}}
    (tmp_path / "eval").mkdir()
    (tmp_path / "run.json").write_text(json.dumps(good_run))
    (tmp_path / "eval" / "best.json").write_text(json.dumps(good_best))
    assert objectives.values_of(tmp_path, ["top1", "parameters", "train_seconds"]) == [0.5, 1234.0, 30.5]
    (tmp_path / file).write_bytes(text.encode("utf-8", "surrogateescape"))
    with caplog.at_level("WARNING", logger="runner.sweep"):
        assert objectives.values_of(tmp_path, ["top1", "parameters", "train_seconds"]) is None
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and str(tmp_path / file) in said[0] and "Fix:" in said[0], said
