"""Two groups of runs: `python -m runner.compare GROUP_A GROUP_B` (a folder of runs, or a quoted glob of run folders).

A group is one setting trained several times: its runs may differ only in trainer.seed (or
dataset.fold); runs that differ in anything else are refused, the keys named. Two tests, stated
in compare.md:
- across seeds: Welch's t-test of the difference of the groups' mean best metric (each run one
  observation; unequal variances), with its 95% interval;
- over samples, where every run of both groups was evaluated on the same validation samples: a
  paired t-test of each sample's seed-averaged correctness (the share of the group's runs that get
  it right), B minus A, with a paired bootstrap interval. Fold groups see different samples: no
  paired test, and compare.md says why.
"""

from __future__ import annotations

import glob
import hashlib
import logging
from pathlib import Path

import numpy as np

from runner.common.errors import UserError
from runner.evaluation import results
from runner.evaluation.ensemble_operands import ensemble_summary
from runner.evaluation.groups import (
    AUTO,
    KIND_NAMES,
    differing_keys,
    mean_interval,
    paired_t,
    welch,
)
from runner.evaluation.paired import bootstrap_difference
from runner.evaluation.run_differences import config_difference, flat, run_config

log = logging.getLogger("runner.compare")

GLOB_CHARACTERS = "*?["


def is_group(operand: str) -> bool:
    """A folder that is no run, no checkpoint and no ensemble but holds runs below it; or a glob pattern."""
    path = Path(operand)
    if not path.exists():
        return any(c in operand for c in GLOB_CHARACTERS)
    return (path.is_dir() and not (path / "run.json").exists() and not (path / "eval").is_dir()
            and ensemble_summary(path) is None and next(path.rglob("run.json"), None) is not None)


def group_runs(operand: str) -> list[Path]:
    """The run folders a group names: every run below a folder, or the runs a glob matches (each match a run
    or a folder of runs)."""
    matches = [Path(operand)] if Path(operand).exists() else [Path(m) for m in sorted(glob.glob(operand))]
    runs = sorted({p.parent for match in matches if match.is_dir() for p in match.rglob("run.json")})
    if not runs:
        raise UserError(f"{operand} names no runs (no run.json below it). Fix: a folder of runs or a quoted glob, "
                        "e.g. python -m runner.compare outputs/exp/lr0.01 'outputs/exp/*/lr0.1*'")
    return runs


def folder_label(operand: str) -> str:
    """A name for an operand in the output folder: a folder's name; a glob's fixed part (up to its first *, ?
    or [) and a short hash of the whole pattern, so no folder is named '*' and two globs never share one."""
    cut = min((operand.index(c) for c in GLOB_CHARACTERS if c in operand), default=None)
    if cut is None:
        return Path(operand).name
    fixed = Path(operand[:cut]).name or "group"
    return f"{fixed}-{hashlib.sha1(operand.encode()).hexdigest()[:6]}"


def disjoint(operand_a: str, runs_a: list[Path], operand_b: str, runs_b: list[Path]) -> None:
    """Refuse two groups that share a run: the tests assume independent groups."""
    shared = sorted(set(runs_a) & set(runs_b))
    if shared:
        raise UserError(f"{operand_a} and {operand_b} share {len(shared)} run(s) ({shared[0]} is in both groups). "
                        "Fix: name two groups without a run in common (a folder or quoted glob each)")


def evaluated(operand: str, runs: list[Path]) -> tuple[list[Path], list[dict], list[dict]]:
    """The group's evaluated runs, their best.json and flat configs; refused when they differ beyond the seed
    and the fold, or when fewer than two are evaluated."""
    bests = [(run, results.read_best(run / "eval")) for run in runs]
    for run, best in bests:
        if not best:
            log.warning("%s has no eval/best.json: left out of its group (python -m runner.evaluate run_dir=%s)",
                        run, run)
    kept = [(run, best) for run, best in bests if best]
    configs = [flat(run_config(run)) for run, _ in kept]
    differ = differing_keys(configs, AUTO)
    if differ:
        raise UserError(f"{operand} holds runs that differ in {', '.join(differ)}, not only in "
                        f"{' or '.join(AUTO)}: a group is one setting trained several times. Fix: give a folder or a "
                        "quoted glob that holds only those runs, e.g. 'outputs/exp/*/lr0.01*'")
    if len(kept) < 2:
        raise UserError(f"{operand} holds {len(kept)} evaluated run(s); a group's spread needs two or more. Fix: "
                        "train more seeds (python -m runner -m trainer.seed=0,1,2 ...) and evaluate them")
    if len({best["metric"] for _, best in kept}) > 1:
        raise UserError(f"{operand}'s runs chose their best by different metrics. Fix: python -m runner.evaluate "
                        "run_dir=RUN metric=top1 on each")
    return [run for run, _ in kept], [best for _, best in kept], configs


def kind_of(configs: list[dict]) -> str:
    return "+".join(KIND_NAMES[key] for key in AUTO if key in differing_keys(configs)) or "repeats"


def correctness(runs: list[Path]) -> tuple[np.ndarray, np.ndarray] | None:
    """(each run's correctness per sample, the labels) when every run was evaluated on the same samples."""
    from runner.evaluation.comparison import best_predictions

    rows, labels = [], None
    for run in runs:
        best, predicted, run_labels = best_predictions(run)
        if best["split"] != "val" or (labels is not None and (len(run_labels) != len(labels)
                                                              or (run_labels != labels).any())):
            return None
        labels = run_labels
        rows.append(predicted == run_labels)
    return np.array(rows), labels


def paired_over_samples(runs_a: list[Path], runs_b: list[Path]) -> dict | None:
    """The paired test over the shared validation samples of the seed-averaged correctness; None without them."""
    a, b = correctness(runs_a), correctness(runs_b)
    if a is None or b is None or len(a[1]) != len(b[1]) or (a[1] != b[1]).any():
        return None
    share_a, share_b = a[0].mean(axis=0), b[0].mean(axis=0)
    return {"n": len(share_a), **paired_t(share_b - share_a), "bootstrap": bootstrap_difference(share_a, share_b)}


def compare_groups(operand_a: str, operand_b: str) -> dict:
    """Everything compare.md says of two groups, as numbers."""
    found_a, found_b = group_runs(operand_a), group_runs(operand_b)
    disjoint(operand_a, found_a, operand_b, found_b)
    (runs_a, bests_a, configs_a), (runs_b, bests_b, configs_b) = (evaluated(operand_a, found_a),
                                                                  evaluated(operand_b, found_b))
    if bests_a[0]["metric"] != bests_b[0]["metric"]:
        raise UserError(f"{operand_a} chose by {bests_a[0]['metric']}, {operand_b} by {bests_b[0]['metric']}. Fix: "
                        "evaluate both groups with the same metric=")
    values_a, values_b = [b["value"] for b in bests_a], [b["value"] for b in bests_b]
    config = [row for row in config_difference(runs_a[0], runs_b[0]) if row[0] not in AUTO]
    return {"a": operand_a, "b": operand_b, "runs_a": runs_a, "runs_b": runs_b, "metric": bests_a[0]["metric"],
            "kind_a": kind_of(configs_a), "kind_b": kind_of(configs_b), "config": config,
            "stats_a": mean_interval(values_a), "stats_b": mean_interval(values_b), "welch": welch(values_a, values_b),
            "paired": paired_over_samples(runs_a, runs_b)}


def verdict(low: float, high: float) -> str:
    return "B is better" if low > 0 else "A is better" if high < 0 else "no difference shown"


def group_report(result: dict) -> str:
    """compare.md for two groups."""
    metric, w, paired = result["metric"], result["welch"], result["paired"]
    lines = [f"# {Path(result['b']).name} (B) against {Path(result['a']).name} (A), as groups", "",
             f"- A: `{result['a']}`", f"- B: `{result['b']}`", "", "## What differs", "",
             "| setting | A | B |", "| --- | --- | --- |", *(f"| {k} | {va} | {vb} |" for k, va, vb in result["config"]),
             "", f"## Best validation {metric}, across runs", ""]
    for who in ("a", "b"):
        s = result[f"stats_{who}"]
        ci = s["ci95"]
        lines.append(f"- {who.upper()}: {s['n']} runs ({result[f'kind_{who}']}), {metric} mean {s['mean']:.4f}, "
                     f"std {s['std']:.4f}, 95% t-interval [{ci[0]:.4f}, {ci[1]:.4f}]")
    lines += ["", "## Tests", "",
              f"- Welch's t-test across seeds: B - A = {w['difference']:+.4f}, t = {w['t']:.3f}, df = {w['df']:.1f}, "
              f"p = {w['p_value']:.3g}" + (f", 95% interval [{w['ci95'][0]:+.4f}, {w['ci95'][1]:+.4f}]: "
                                           f"**{verdict(*w['ci95'])}**" if "ci95" in w else "")]
    if paired:
        boot = paired["bootstrap"]
        lines.append(f"- paired t-test over the same {paired['n']} val samples of the seed-averaged correctness: "
                     f"B - A = {paired['difference']:+.4f}, t = {paired['t']:.3f}, df = {paired['df']}, "
                     f"p = {paired['p_value']:.3g}; paired bootstrap 95% interval [{boot['ci95'][0]:+.4f}, "
                     f"{boot['ci95'][1]:+.4f}]: **{verdict(*boot['ci95'])}**")
    else:
        lines.append("- no paired test over samples: the groups' runs were not all evaluated on the same validation "
                     "samples (folds, or another split)")
    lines += ["", "The test across seeds asks whether another seed would keep the order; the paired one, whether "
              "these samples do (each sample's share of a group's runs that get it right).", "",
              "## Runs", "", *(f"- A: `{run}`" for run in result["runs_a"]),
              *(f"- B: `{run}`" for run in result["runs_b"]), "", "![curves](curves.png)", ""]
    return "\n".join(lines)
