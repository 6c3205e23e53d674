"""Many runs as one: `python -m runner.runs outputs group_by=auto` (and `runner.compare GROUP_A GROUP_B`'s tests).

A single run's number is one draw: runs whose configs differ only in trainer.seed are one setting
measured several times (a seed group), runs that differ only in dataset.fold are one
cross-validation (a fold group). A group's row gives its runs, the mean, the standard deviation
and a 95% t-interval (mean +- t(0.975, n-1) s / sqrt(n)) of their best metric. `group_by=KEY,...`
pools over exactly the keys named instead. Runs of one name that still differ in another key are
split into groups of their own, with a warning naming the keys that split them.

The statistics compare uses are here too: Welch's t-test across the groups' runs (unequal
variances), and a paired t-test over samples.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import statistics
from collections import Counter

import numpy as np

from runner.common.errors import UserError
from runner.evaluation.run_differences import NOT_SETTINGS

log = logging.getLogger("runner.runs")

SEED, FOLD = "trainer.seed", "dataset.fold"
AUTO = (SEED, FOLD)  # group_by=auto pools over these
KIND_NAMES = {SEED: "seeds", FOLD: "folds"}
# metrics that live in [0, 1]: a t-interval of a few runs near 1 reaches past it (mean + t s / sqrt(n) assumes an
# unbounded normal), and no run can score there, so their intervals are clipped to [0, 1]
BOUNDED = ("top1", "top5", "balanced_accuracy", "ece")
GROUP_COLUMNS = ["name", "group", "kind", "runs", "status", "overrides", "metric", "mean", "std", "ci95"]


def pooled_keys(group_by: str) -> tuple[str, ...]:
    """The keys a group pools over: group_by=auto (the seed and the fold) or group_by=KEY,KEY."""
    if group_by == "auto":
        return AUTO
    keys = tuple(key.strip() for key in group_by.split(",") if key.strip())
    if "auto" in keys:
        raise UserError(f"group_by={group_by!r} mixes auto with keys: auto is not a key. Fix: group_by=auto, or "
                        f"name every key: group_by={','.join([*AUTO, *(k for k in keys if k != 'auto')])}")
    if not keys or any("=" in key for key in keys):
        raise UserError(f"group_by={group_by!r} names no config keys. Fix: group_by=auto (runs that differ only in "
                        "trainer.seed or dataset.fold), group_by=trainer.seed,optimizer.lr or group_by=none")
    return keys


def known_keys(rows: list[dict], pooled: tuple[str, ...]) -> None:
    """Refuse a pooled key that no run's config has (group_by=seed: every run its own group), naming the closest."""
    keys = sorted({key for row in rows for key in (row.get("_config") or {})})
    for key in pooled if keys and pooled != AUTO else ():
        if key not in keys:
            closest = [k for k in keys if k.endswith("." + key)] or difflib.get_close_matches(key, keys, 1, 0.0)
            raise UserError(f"group_by names {key!r}, which no run's config has. Fix: group_by="
                            f"{','.join(closest[0] if k == key else k for k in pooled)} (the closest key)")


def t_quantile(probability: float, df: float) -> float:
    from scipy.stats import t

    return float(t.ppf(probability, df))


def two_sided_p(t_value: float, df: float) -> float:
    from scipy.stats import t

    return float(min(1.0, 2 * t.sf(abs(t_value), df)))


def mean_interval(values: list[float], bounded: bool = False) -> dict:
    """n, mean, standard deviation (n-1) and the 95% t-interval of the mean; no spread for a single value. A
    bounded metric's (BOUNDED) interval is clipped to [0, 1]."""
    n, mean = len(values), sum(values) / len(values)
    if n < 2:
        return {"n": n, "mean": mean, "std": None, "ci95": None}
    std = statistics.stdev(values)
    half = t_quantile(0.975, n - 1) * std / math.sqrt(n)
    low, high = (max(0.0, mean - half), min(1.0, mean + half)) if bounded else (mean - half, mean + half)
    return {"n": n, "mean": mean, "std": std, "ci95": [low, high]}


def welch(a: list[float], b: list[float]) -> dict:
    """Welch's t-test of mean(b) - mean(a) (unequal variances, Welch-Satterthwaite degrees of freedom)."""
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    sa, sb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    difference = mb - ma
    if sa + sb == 0:  # every run of both groups scored alike: the difference is exact or nothing
        return {"difference": difference, "t": 0.0 if difference == 0 else math.copysign(math.inf, difference),
                "df": len(a) + len(b) - 2, "p_value": 1.0 if difference == 0 else 0.0}
    df = (sa + sb) ** 2 / (sa**2 / (len(a) - 1) + sb**2 / (len(b) - 1))
    t_value = difference / math.sqrt(sa + sb)
    half = t_quantile(0.975, df) * math.sqrt(sa + sb)
    return {"difference": difference, "t": t_value, "df": df, "p_value": two_sided_p(t_value, df),
            "ci95": [difference - half, difference + half]}


def paired_t(differences: np.ndarray) -> dict:
    """A paired t-test that the mean of per-sample differences is 0 (n-1 degrees of freedom)."""
    n, mean = len(differences), float(np.mean(differences))
    spread = float(np.std(differences, ddof=1)) if n > 1 else 0.0
    if spread == 0:
        return {"difference": mean, "t": 0.0 if mean == 0 else math.copysign(math.inf, mean), "df": n - 1,
                "p_value": 1.0 if mean == 0 else 0.0}
    t_value = mean / (spread / math.sqrt(n))
    return {"difference": mean, "t": t_value, "df": n - 1, "p_value": two_sided_p(t_value, n - 1)}


def is_setting(key: str, pooled: tuple[str, ...]) -> bool:
    return key not in pooled and not key.startswith(NOT_SETTINGS)


def differing_keys(configs: list[dict], pooled: tuple[str, ...] = ()) -> list[str]:
    """The settings (flat keys) whose values are not the same in every config, the pooled ones left out."""
    keys = sorted({key for config in configs for key in config})
    return [key for key in keys if is_setting(key, pooled) and len({json.dumps(c.get(key), sort_keys=True, default=str)
                                                                   for c in configs}) > 1]


def grouped(rows: list[dict], pooled: tuple[str, ...]) -> list[list[dict]]:
    """Rows with the same settings but the pooled keys together, in the order they first appear; a run
    without a readable config is a group of its own."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        config = row.get("_config")
        # the name too: runs of two names are two experiments, never one group (compare ignores names)
        key = json.dumps([row.get("name"), {k: v for k, v in config.items() if is_setting(k, pooled)}],
                         sort_keys=True, default=str) if config else f"run {row['run']}"
        groups.setdefault(key, []).append(row)
    return list(groups.values())


def warn_about_splits(groups: list[list[dict]], pooled: tuple[str, ...]) -> None:
    """Runs of one name in several groups: say which settings split them."""
    by_name: dict[str, list[dict]] = {}
    for runs in groups:
        if runs[0].get("_config"):
            by_name.setdefault(str(runs[0]["name"]), []).append(runs[0]["_config"])
    for name, configs in by_name.items():
        if len(configs) > 1:
            log.warning("runs named %s form %d groups: they differ in %s (group_by pools over %s only; "
                        "name a key there to pool over it too)", name, len(configs),
                        ", ".join(differing_keys(configs, pooled)), ",".join(pooled))


def newest_per_fold(runs: list[dict], pooled: tuple[str, ...]) -> list[dict]:
    """A fold (with the same other pooled keys) run twice counts once: its newest run, with a warning."""
    if FOLD not in pooled or all((r.get("_config") or {}).get(FOLD) is None for r in runs):
        return runs
    newest: dict[str, dict] = {}
    for run in sorted(runs, key=lambda r: str(r.get("start") or "")):
        newest[json.dumps([(run.get("_config") or {}).get(k) for k in pooled], default=str)] = run
    if len(newest) < len(runs):
        log.warning("%s: a fold was run more than once; each counts once, its newest run (%d of %d runs)",
                    runs[0]["name"], len(newest), len(runs))
    return [r for r in runs if any(r is kept for kept in newest.values())]


def runs_cell(runs: list[dict], values: list[float], varying: list[str]) -> str:
    """How many runs the statistics hold; a cross-validation with folds missing says so ("2 of 5 folds")."""
    folds = (runs[0].get("_config") or {}).get("dataset.folds")
    ran = {json.dumps((r.get("_config") or {}).get(FOLD)) for r in runs}
    if FOLD in varying and isinstance(folds, int) and len(ran) < folds:
        return f"{len(values)} of {folds} folds"
    return str(len(values)) if len(values) == len(runs) else f"{len(values)} of {len(runs)}"


def group_row(runs: list[dict], pooled: tuple[str, ...]) -> dict:
    """One group's row: its folder, what varies in it, its runs' status, and its best metric's statistics."""
    paths = [str(r["run"]) for r in runs]
    common = os.path.commonpath(paths) if len(paths) > 1 else paths[0]
    varying = [key for key in pooled if key in differing_keys([r.get("_config") or {} for r in runs])]
    runs = newest_per_fold(runs, pooled)
    evaluated = [r for r in runs if r["best"] is not None]
    metric = evaluated[0]["_metric"] if evaluated else None
    values = [r["best"] for r in evaluated if r["_metric"] == metric]
    stats = mean_interval(values, metric in BOUNDED) if values else {"mean": None, "std": None, "ci95": None}
    statuses = Counter(r["status"] for r in runs)
    # the overrides a person chose (no sweep plumbing), shared by the group's runs, the pooled keys left out
    shown = [o for o in runs[0].get("_shown", []) if all(o in r.get("_shown", []) for r in runs[1:])
             and o.lstrip("+~").split("=", 1)[0] not in pooled]
    kind = "+".join(sorted(KIND_NAMES.get(key, key) for key in varying)) or "-"
    return {"name": runs[0]["name"], "group": common or f"{paths[0]} ...", "kind": kind,
            "runs": runs_cell(runs, values, varying),
            "status": next(iter(statuses)) if len(statuses) == 1 else ", ".join(f"{n} {s}" for s, n in statuses.items()),
            "overrides": " ".join(shown), "_shown": shown, "mean": stats["mean"], "std": stats["std"],
            "metric": "-" if metric is None else f"cross-validated {metric}" if FOLD in varying else metric,
            "ci95": f"[{stats['ci95'][0]:.4f}, {stats['ci95'][1]:.4f}]" if stats["ci95"] else "-"}


def group_rows(rows: list[dict], group_by: str) -> list[dict]:
    """The runs table's rows (run_table.table) as one row per group."""
    pooled = pooled_keys(group_by)
    known_keys(rows, pooled)
    groups = grouped(rows, pooled)
    warn_about_splits(groups, pooled)
    return [group_row(runs, pooled) for runs in groups]
