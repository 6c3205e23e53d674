"""What `python -m runner logger=[tensorboard,mlflow]` sends, read from what the run has already written.

The scalars come from the run's TensorBoard event files (tb/: training's, the evaluator's, the HParams summary),
read with TensorBoard's own EventAccumulator; the params are the resolved config; the files are the evaluator's
rows and figures (eval/*.csv, *.png, *.json) and Hydra's record of the config (.hydra/*.yaml). A tracker is sent
copies; these files stay the source of truth, so a tracker that was down misses nothing that is still on disk.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

# (step, value, wall time in seconds)
Series = list[tuple[int, float, float]]
FILE_FOLDERS = {"eval": (".csv", ".png", ".json"), ".hydra": (".yaml",)}


def scalar_points(tb_dir: Path) -> dict[str, Series]:
    """Every scalar in the event files under tb_dir, by tag, in step order. A step written twice (a resumed
    attempt repeats the steps after its checkpoint, the same values in a deterministic run) keeps its first."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    series: dict[str, dict[int, tuple[float, float]]] = {}
    for path in event_files(tb_dir):
        # size_guidance 0: every point (by default it keeps a sample of 10,000 a tag); nothing but the scalars
        events = EventAccumulator(str(path), size_guidance={SCALARS: 0, "images": 1, "histograms": 1,
                                                             "tensors": 1, "audio": 1, "compressedHistograms": 1})
        events.Reload()
        prefix = "/".join(path.parent.relative_to(tb_dir).parts)  # a writer's own folder under tb/
        for tag in events.Tags()[SCALARS]:
            kept = series.setdefault(f"{prefix}/{tag}" if prefix else tag, {})
            for event in events.Scalars(tag):
                kept.setdefault(event.step, (event.value, event.wall_time))
    return {tag: [(step, *kept[step]) for step in sorted(kept)] for tag, kept in series.items()}


def event_files(tb_dir: Path) -> list[Path]:
    """The event files under tb_dir, oldest first (their names start with the time they were opened)."""
    if not tb_dir.is_dir():
        return []
    def opened(path: Path) -> tuple[int, str]:
        stamp = path.name.split(".")[3]
        return int(stamp) if stamp.isdigit() else 0, str(path)

    return sorted(tb_dir.rglob("events.out.tfevents.*"), key=opened)


def new_points(series: dict[str, Series], sent: dict[str, int]) -> list[tuple[str, int, float, float]]:
    """(tag, step, value, wall time) of the points after each tag's last step sent, in step order."""
    fresh = [(tag, step, value, wall_time) for tag, points in series.items()
             for step, value, wall_time in points if step > sent.get(tag, -1)]
    return sorted(fresh, key=lambda point: (point[1], point[0]))


def config_params(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as {"optimizer.lr": "0.001", "dataset.image_size": "[11, 13]", ...}."""
    params: dict[str, str] = {}

    def flatten(value, key: str) -> None:
        if isinstance(value, dict) and value:
            for name, inner in value.items():
                flatten(inner, f"{key}.{name}" if key else str(name))
        else:
            params[key] = "null" if value is None else str(value)

    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:  # a saved config read without runner's resolvers (python -m runner.tracking)
        plain = OmegaConf.to_container(cfg, resolve=False)
    flatten(plain, "")
    return params


def files_to_send(run_dir: Path) -> dict[str, str]:
    """{path relative to the run: its fingerprint (size and modification time)} of the files trackers receive."""
    found = {}
    for folder, suffixes in FILE_FOLDERS.items():
        for path in sorted((run_dir / folder).glob("*")) if (run_dir / folder).is_dir() else []:
            if path.is_file() and path.suffix in suffixes and not path.name.startswith("."):
                stat = path.stat()
                found[f"{folder}/{path.name}"] = f"{stat.st_size}:{stat.st_mtime_ns}"
    return found
