"""python -m runner.compare RUN_A RUN_B: what differs between two runs besides their results.

"Change one thing at a time": the config difference key by key (the composed .hydra/config.yaml,
else the config saved in the best checkpoint; names and bookkeeping left out) and what else can make
two runs differ (code version, uncommitted changes, torch, device, seed, from run.json). A file that
cannot be read is left out with a warning: the comparison goes on without it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from runner.common.errors import UserError
from runner.evaluation import records, results

log = logging.getLogger("runner.compare")

# What is not a setting: labels and bookkeeping (name, sweep., resume), and what only observes a run: it
# writes logs, light checkpoints, histograms or a watching evaluator's curves, and reads the weights without
# changing them (no random draw, no update), so two runs that differ only there trained the same weights.
OBSERVING = ("checkpoint.every_updates", "checkpoint.keep_updates", "trainer.log_every_steps",
             "trainer.log_histograms_every", "logger.", "evaluate.during_training")
NOT_SETTINGS = ("name", "sweep.", "resume", *OBSERVING)


def flat(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        return {k: v for key, child in node.items() for k, v in flat(child, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): node}


def saved_config(run: Path) -> dict:
    """The resolved config saved in the run's best checkpoint; {} with a warning when it cannot be read."""
    from runner.common import checkpoint_files  # torch: only here, so the runs table stays quick

    try:
        best = results.read_best(run / "eval")
        return checkpoint_files.load(run / best["checkpoint"], parts=("config",))["config"] if best else {}
    except UserError as error:
        log.warning("%s: its saved config is left out", error)
        return {}


def run_config(run: Path) -> dict:
    """The run's config as composed (.hydra/config.yaml), else the one saved in its best checkpoint."""
    try:
        composed = records.read_yaml_mapping(run / ".hydra" / "config.yaml", records.HYDRA_CONFIG,
                                             "repair or remove it (compare then reads the best checkpoint's config)")
    except UserError as error:
        log.warning("%s: the config saved in the best checkpoint is compared instead", error)
        composed = None
    return composed or saved_config(run)


def config_difference(a: Path, b: Path) -> list[tuple[str, object, object]]:
    """(key, value in A, value in B) for every setting that differs."""
    fa, fb = (flat(run_config(run)) for run in (a, b))
    keys = sorted(set(fa) | set(fb))
    return [(k, fa.get(k, "-"), fb.get(k, "-")) for k in keys
            if fa.get(k) != fb.get(k) and not k.startswith(NOT_SETTINGS)]


def other_differences(a: Path, b: Path) -> list[tuple[str, object, object]]:
    """What else can make two runs differ: the code version, torch, the device, the seed."""
    ra, rb = run_record(a), run_record(b)

    def facts(record: dict) -> dict:
        git, environment = record.get("git") or {}, record.get("environment") or {}
        return {"git commit": git.get("commit", "-"), "uncommitted changes": bool(git.get("dirty")),
                "torch": environment.get("torch", "-"), "device": environment.get("device_name") or
                environment.get("device", "-"), "seed": record.get("seed", "-")}
    fa, fb = facts(ra), facts(rb)
    return [(k, fa[k], fb[k]) for k in fa if fa[k] != fb[k]]


def run_record(run: Path) -> dict:
    """The run's run.json; {} with a warning when it is missing or of the wrong shape."""
    try:
        return records.read_json_object(run / "run.json", records.RUN_RECORD, "restore the run's run.json") or {}
    except UserError as error:
        log.warning("%s: the code version, torch, device and seed of this run are not compared", error)
        return {}
