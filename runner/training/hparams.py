"""python -m runner [-m ...]: TensorBoard's HParams dashboard, one table for the folder of runs it is pointed at.

TensorBoard shows the columns (settings and metrics) of the first experiment summary it finds under its
logdir, and one row per session. So each run writes only its session into its own tb/ (the settings its
command line chose, its figures as `hparams/...` scalars, its end), named by its study and trial number in
a sweep, else by its folder; and after each run the experiment summary of the folder TensorBoard is
pointed at is written again, whole and the same, in the run's parent and each folder above it up to
outputs/<name>/ (a multirun's or a sweep's folder, sweeps/): the union of the settings chosen by every run found
there (run.json's `hparams`), the objective first among the metrics. A pruned trial's row shows its last
validation figures (eval/metrics.jsonl).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from runner.common.io import write_atomic

SUMMARY = Path("hparams") / "events.out.tfevents.hparams"  # in a folder of runs: its experiment summary
TRAIN_LOSS = "hparams/final_train_loss"
DEPTH = 5  # outputs/<name>/sweeps/<study>/trial_0004/seed_1: the deepest a run lies below its name folder
STATUS = {"finished": "STATUS_SUCCESS", "pruned": "STATUS_SUCCESS", "failed": "STATUS_FAILURE"}


def metric_tags(objective: str, metrics: tuple[str, ...]) -> list[str]:
    """hparams/val_<objective> first (what a sweep ranks by), the other validation metrics, the training loss."""
    return [f"hparams/val_{m}" for m in (objective, *(m for m in metrics if m != objective))] + [TRAIN_LOSS]


def session_name(run_dir: Path, record: dict, status: str = "finished") -> str:
    """'flowers-lr #3' for a sweep's trial (its study and number), else the run's folder ('2026-12-03_10-00-00.123',
    'multirun_2026-12-03_10-00-00/2'); a pruned one says so."""
    sweep = record.get("sweep")
    parent = run_dir.parent
    name = f"{sweep['study']} #{sweep['trial']}" if sweep else \
        f"{parent.name}/{run_dir.name}" if is_sweep_folder(parent) else run_dir.name
    return f"{name} (pruned)" if status == "pruned" else name


def is_sweep_folder(folder: Path) -> bool:
    return (folder / "multirun.yaml").is_file()  # Hydra writes it into every multirun's (and sweep's) folder


def summary_folders(run_dir: Path, name: str) -> list[Path]:
    """Where TensorBoard may be pointed at for this run: its parent, and each folder above it up to the runs'
    name folder (outputs/<name>/: a multirun's or a sweep's trials lie deeper); just the parent elsewhere."""
    parent = Path(run_dir).resolve().parent
    above = [parent, *parent.parents]
    named = next((i for i, folder in enumerate(above[:DEPTH]) if folder.name == name), None)
    if named is not None:
        return above[:named + 1]
    return [parent, parent.parent] if is_sweep_folder(parent) else [parent]


def write_session(tb_folder: str, hparams: dict, values: dict, group: str, status: str, step: int) -> None:
    """The run's session in its tb/: start (settings, group name), the figures as scalars, end (status)."""
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
    from torch.utils.tensorboard import SummaryWriter

    start = plugin_data_pb2.SessionStartInfo(group_name=group, start_time_secs=time.time())
    for key, value in hparams.items():
        set_value(start.hparams[key], value)
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.Status.Value(STATUS[status]), end_time_secs=time.time())
    with SummaryWriter(tb_folder) as writer:
        writer.file_writer.add_summary(plugin_summary("_hparams_/session_start_info", session_start_info=start), step)
        for tag, value in values.items():
            writer.add_scalar(tag, value, step)
        writer.file_writer.add_summary(plugin_summary("_hparams_/session_end_info", session_end_info=end), step)


def set_value(slot, value) -> None:
    """A setting into a protobuf Value: bool, number or text."""
    if isinstance(value, bool):
        slot.bool_value = value
    elif isinstance(value, int | float):
        slot.number_value = value
    else:
        slot.string_value = str(value)


def plugin_summary(tag: str, **content):
    """A Summary carrying the hparams plugin's data (what torch's add_hparams writes, one part at a time)."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    data = plugin_data_pb2.HParamsPluginData(version=metadata.PLUGIN_DATA_VERSION, **content)
    plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=data.SerializeToString())
    return Summary(value=[Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin))])


def runs_below(folder: Path, depth: int) -> list[dict]:
    """run.json of each run in `folder` or in the folders inside it, `depth` levels down (never a deeper walk)."""
    records = []
    for path in sorted(p for level in range(1, depth + 1) for p in folder.glob("*/" * level + "run.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a run being written or broken: the next run's summary counts it
        if isinstance(record, dict) and isinstance(record.get("hparams") or {}, dict):
            records.append(record)  # another shape: not a run's record (runner.runs warns about it)
    return records


def experiment(records: list[dict], metrics: list[str]):
    """The Experiment proto: one column per setting any run chose (its type and values over the runs)."""
    from tensorboard.plugins.hparams import api_pb2

    values: dict[str, list] = {}
    for record in records:
        for key, value in (record.get("hparams") or {}).items():
            values.setdefault(key, []).append(value)
    columns = []
    for key, seen in sorted(values.items()):
        distinct = sorted({json.dumps(v) for v in seen})
        info = api_pb2.HParamInfo(name=key, differs=len(distinct) > 1)
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in seen):
            info.type = api_pb2.DATA_TYPE_FLOAT64
            info.domain_interval.min_value, info.domain_interval.max_value = min(seen), max(seen)
        else:
            info.type = api_pb2.DATA_TYPE_BOOL if all(isinstance(v, bool) for v in seen) else api_pb2.DATA_TYPE_STRING
            for v in distinct:
                set_value(info.domain_discrete.values.add(), json.loads(v))
        columns.append(info)
    return api_pb2.Experiment(hparam_infos=columns,
                              metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=t)) for t in metrics])


def write_folder_summaries(run_dir: Path, metrics: list[str], name: str) -> list[Path]:
    """The experiment summary of the runs around run_dir (`name`: the runs' name, cfg.name), written again in
    each folder TensorBoard may be pointed at."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    folders = summary_folders(run_dir, name)
    records = runs_below(folders[-1], DEPTH if folders[-1].name == name else 2)
    summary = plugin_summary("_hparams_/experiment", experiment=experiment(records, metrics))
    now = time.time()

    def write(file) -> None:
        records = RecordWriter(file)
        records.write(Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
        records.write(Event(wall_time=now, step=0, summary=summary).SerializeToString())

    for folder in folders:  # one file, replaced whole: the same columns whichever folder TensorBoard reads first
        write_atomic(folder / SUMMARY, write)
    return [folder / SUMMARY for folder in folders]


def last_validation_figures(run_dir: Path, metrics: tuple[str, ...]) -> dict:
    """A pruned trial's figures: its last validation row of the run's own settings and raw weights."""
    path = run_dir / "eval" / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    rows = [r for r in rows if r.get("split") == "val" and not r.get("variant") and r.get("weights", "raw") == "raw"]
    if not rows:
        return {}
    last = max(rows, key=lambda r: r["global_step"])
    return {key: last[key] for key in metrics if last.get(key) is not None}
