"""TensorBoard's HParams dashboard over a folder of runs, read back with TensorBoard's own hparams plugin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard import context
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import (
    api_pb2,
    backend_context,
    get_experiment,
    list_session_groups,
)

from runner.run import train_and_evaluate as train_job
from runner.training import hparams as hparams_module
from runner.training import job
from tests.conftest import TINY, compose_config


def dashboard(logdir: Path) -> tuple[api_pb2.Experiment, list]:
    """What TensorBoard's HParams dashboard shows for `tensorboard --logdir LOGDIR`: its experiment (columns) and
    session groups (rows), through the plugin's own request handlers."""
    events = plugin_event_multiplexer.EventMultiplexer()
    events.AddRunsFromDirectory(str(logdir))
    events.Reload()
    tb = base_plugin.TBContext(logdir=str(logdir), multiplexer=events,
                               data_provider=data_provider.MultiplexerDataProvider(events, str(logdir)))
    backend = backend_context.Context(tb)
    request = context.RequestContext()
    experiment = get_experiment.Handler(request, backend, "", api_pb2.GetExperimentRequest()).run()
    columns = [api_pb2.ColParams(metric=m.name) for m in experiment.metric_infos]
    columns += [api_pb2.ColParams(hparam=h.name) for h in experiment.hparam_infos]
    groups = list_session_groups.Handler(request, backend, "", api_pb2.ListSessionGroupsRequest(
        experiment_name="", start_index=0, slice_size=100, col_params=columns,
        aggregation_type=api_pb2.AGGREGATION_AVG,
        allowed_statuses=[api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE,
                          api_pb2.STATUS_RUNNING])).run().session_groups
    return experiment, list(groups)


def metric_values(group) -> dict:
    return {v.name.tag: v.value for v in group.metric_values}


def train_with_overrides(run_dir: Path, overrides: list[str], monkeypatch, extra: list[str] = ()) -> dict:
    """A tiny run whose command line said `overrides` (what TensorBoard's table names)."""
    monkeypatch.setattr(job, "hydra_overrides", lambda: list(overrides))
    return train_job(compose_config([*TINY, "trainer.epochs=1", *overrides, *extra, "evaluate.after_training=true",
                                     "evaluate.galleries=false"]), run_dir)  # figures: not what is tested here


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory) -> Path:
    """outputs/<name>/: three tiny runs with different learning rates, the second with another seed too."""
    folder = tmp_path_factory.mktemp("outputs") / "smoke"
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name, overrides in (("a", ["optimizer.lr=0.01"]), ("b", ["optimizer.lr=0.1", "trainer.seed=3"]),
                                ("c", ["optimizer.lr=0.001"])):
            train_with_overrides(folder / name, overrides, monkeypatch)
    return folder


def test_one_experiment_for_the_folder_with_the_union_of_the_chosen_settings(three_runs):
    experiment, groups = dashboard(three_runs)

    columns = {h.name: h for h in experiment.hparam_infos}
    assert set(columns) == {"optimizer.lr", "trainer.seed"}
    assert columns["optimizer.lr"].differs and columns["trainer.seed"].differs
    assert (columns["optimizer.lr"].domain_interval.min_value, columns["optimizer.lr"].domain_interval.max_value) == \
        (0.001, 0.1)
    tags = [m.name.tag for m in experiment.metric_infos]
    assert tags[0] == "hparams/val_top1"  # evaluate.metric: the objective first
    assert {"hparams/val_loss", "hparams/final_train_loss"} <= set(tags)

    # one row a run, named by its folder, with its settings and its best validation figures
    assert sorted(g.name for g in groups) == ["a", "b", "c"]
    by_name = {g.name: g for g in groups}
    lr = {name: g.sessions[0] for name, g in by_name.items()}
    assert {name: g.hparams["optimizer.lr"].number_value for name, g in by_name.items()} == \
        {"a": 0.01, "b": 0.1, "c": 0.001}
    assert by_name["b"].hparams["trainer.seed"].number_value == 3
    for name, session in lr.items():
        best = json.loads((three_runs / name / "eval" / "best.json").read_text())
        assert metric_values(session)["hparams/val_top1"] == pytest.approx(best["metrics"]["top1"])
        assert metric_values(session)["hparams/val_loss"] == pytest.approx(best["metrics"]["loss"])
        assert session.status == api_pb2.STATUS_SUCCESS


def test_the_runs_name_is_no_column_and_the_summary_says_where_to_compare(tmp_path, monkeypatch, capsys):
    assert job.chosen_settings(compose_config([*TINY, "name=smoke", "optimizer.lr=0.5"]),
                               ["name=smoke", "optimizer.lr=0.5", "sweep.study=x"]) == \
        {"optimizer.lr": 0.5, "trainer.seed": 0}  # every run in outputs/smoke/ has that name: not a setting
    job.print_summary(tmp_path / "smoke" / "run", None, "top1")
    assert f"tensorboard --logdir {tmp_path / 'smoke'}   (every run beside it: HParams compares them)" in \
        capsys.readouterr().out


def test_each_run_writes_only_its_session(three_runs):
    events = plugin_event_multiplexer.EventMultiplexer()
    events.AddRunsFromDirectory(str(three_runs))
    events.Reload()
    tags = events.PluginRunToTagToContent("hparams")
    assert "_hparams_/experiment" not in tags["a/tb"]
    assert {"_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(tags["a/tb"])
    assert list(three_runs.glob("*/tb/*/*tfevents*")) == []  # no `_hparams_`-style subfolder per run
    assert [run for run, t in tags.items() if "_hparams_/experiment" in t] == ["hparams"]


def test_a_sweep_folder_and_its_parent_show_the_same_columns(tmp_path, monkeypatch):
    """A trial of a sweep: named by study and number; the summary in the sweep's folder and in outputs/<name>/."""
    name = tmp_path / "outputs" / "smoke"
    sweep = name / "multirun_2026-12-03_10-00-00"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("{}\n")
    (name / "single").mkdir()
    (name / "single" / "run.json").write_text(json.dumps({"hparams": {"experiment": "smoke", "trainer.seed": 0}}))
    record = {"sweep": {"study": "smoke-lr", "trial": 4}, "hparams": {"optimizer.lr": 0.05, "trainer.seed": 0}}
    (sweep / "4").mkdir()
    (sweep / "4" / "run.json").write_text(json.dumps(record))

    written = hparams_module.write_folder_summaries(sweep / "4", hparams_module.metric_tags("loss", ("top1", "loss")),
                                                    "smoke")

    assert written == [sweep / "hparams" / "events.out.tfevents.hparams", name / "hparams" / "events.out.tfevents.hparams"]
    for logdir in (name, sweep):
        experiment, _ = dashboard(logdir)
        assert {h.name for h in experiment.hparam_infos} == {"experiment", "optimizer.lr", "trainer.seed"}
        assert [m.name.tag for m in experiment.metric_infos][:2] == ["hparams/val_loss", "hparams/val_top1"]
    assert hparams_module.session_name(sweep / "4", record) == "smoke-lr #4"
    assert hparams_module.session_name(sweep / "4", record, "pruned") == "smoke-lr #4 (pruned)"
    assert hparams_module.session_name(sweep / "5", {}) == "multirun_2026-12-03_10-00-00/5"


def test_an_optuna_sweeps_trials_deeper_down_count_in_every_folder_up_to_the_name(tmp_path):
    """hydra/sweeper=runner_optuna: outputs/<name>/sweeps/<study>/trial_0004/seed_1/: a summary in each folder a
    user may point TensorBoard at, from the study's folder up to outputs/<name>/, none above it."""
    name = tmp_path / "outputs" / "smoke"
    trial = name / "sweeps" / "smoke-lr" / "trial_0004" / "seed_1"
    trial.mkdir(parents=True)
    (name / "single").mkdir()
    (name / "single" / "run.json").write_text(json.dumps({"hparams": {"experiment": "smoke", "trainer.seed": 0}}))
    (trial / "run.json").write_text(json.dumps({"sweep": {"study": "smoke-lr", "trial": 4},
                                                "hparams": {"optimizer.lr": 0.05, "trainer.seed": 1}}))

    written = hparams_module.write_folder_summaries(trial, hparams_module.metric_tags("top1", ("top1",)), "smoke")

    assert [path.parent.parent for path in written] == [trial.parent, trial.parents[1], trial.parents[2], name]
    experiment, _ = dashboard(name)
    assert {h.name for h in experiment.hparam_infos} == {"experiment", "optimizer.lr", "trainer.seed"}
    assert not (tmp_path / "outputs" / "hparams").exists()


def test_a_pruned_trial_shows_its_last_validation_figures(tmp_path):
    """A pruned trial: its row named by study and number, with the last validation row it was judged on."""
    sweep = tmp_path / "multirun_2026-12-03_10-00-00"
    run_dir = sweep / "2"
    (run_dir / "eval").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("{}\n")
    rows = [{"split": "val", "variant": "", "weights": "raw", "global_step": 3, "top1": 0.25, "loss": 1.5},
            {"split": "val", "variant": "", "weights": "raw", "global_step": 6, "top1": 0.5, "loss": 1.25},
            {"split": "val", "variant": "", "weights": "ema", "global_step": 9, "top1": 0.75, "loss": 1.0},
            {"split": "val", "variant": "tta=flip", "weights": "raw", "global_step": 9, "top1": 0.75, "loss": 1.0}]
    (run_dir / "eval" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    record = {"sweep": {"study": "smoke-lr", "trial": 2}, "hparams": {"optimizer.lr": 0.5, "trainer.seed": 0}}
    (run_dir / "run.json").write_text(json.dumps(record))

    job.write_hparams(compose_config(TINY), run_dir, record, {}, None, status="pruned")

    _, groups = dashboard(sweep)
    (group,) = groups
    assert group.name == "smoke-lr #2 (pruned)"
    assert metric_values(group) == {"hparams/val_top1": 0.5, "hparams/val_loss": 1.25}  # its last raw row


def test_a_malformed_run_json_beside_does_not_break_the_folders_summary(tmp_path):
    """A run.json of another shape (a list, hparams not a mapping) is not a run's record: it is left out, the
    summary is written from the others (runner.runs warns about the malformed file)."""
    for name, record in {"a": [1, 2], "b": {"hparams": ["x"]}, "c": {"hparams": {"optimizer.lr": 0.1}}}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps(record))
    assert [r["hparams"] for r in hparams_module.runs_below(tmp_path, 1)] == [{"optimizer.lr": 0.1}]
