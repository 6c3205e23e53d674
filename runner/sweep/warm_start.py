"""Known-good points first: `python -m runner -m ... 'hydra.sweeper.enqueue=[{optimizer.lr:0.005}]'`, and
`hydra.sweeper.warm_start=outputs/NAME/sweeps/STUDY` (an earlier sweep's best trials, run first in the
new, usually narrowed, one: coarse to fine in one step). Each point must lie in the search space.

A warm start says in one line each what does not carry over: a study of other fixed settings (another
experiment), parameters this search space lacks (dropped from its points), and so the points trained
again. Where the config is the same (the fixed settings, every parameter of the search, the objective),
a point's value is known: it is copied into the new study instead of trained again.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.distributions import BaseDistribution

from runner.common.errors import UserError
from runner.common.study_storage import redact, redacted, storage_for
from runner.sweep.conditions import check_point, is_active, only_active
from runner.sweep.results import best_first
from runner.sweep.resume_rules import recorded_repeats
from runner.sweep.space import as_overrides, canonical
from runner.sweep.study import COPIED

SPREAD = ("seed_values", "std", "n", "ci95")  # a repeats trial's user attributes (runner/sweep/repeats.py record)

log = logging.getLogger("runner.sweep")


@dataclass
class Known:
    """A finished trial of the earlier sweep whose value stands for this sweep too."""

    point: dict
    values: list[float]
    label: str  # "<the earlier sweep> trial N"
    run_dir: str | None  # its run folder, where the earlier sweep is a folder
    spread: dict = field(default_factory=dict)  # hydra.sweeper.repeats: its seeds' values, std, n and ci95


def open_source(source: str, storage_url: str | None) -> tuple[optuna.Study, Path | None]:
    """The earlier sweep's study, and its folder: `source` is that folder, or a study's name in `storage_url`."""
    journal = Path(source) / "study.journal"
    where = str(journal) if journal.is_file() else storage_url
    storage = storage_for(where) if where else None
    names = optuna.get_all_study_names(storage) if storage else []
    name = names[0] if journal.is_file() and len(names) == 1 else source  # a sweep folder holds one study
    if name not in names:
        raise UserError(f"hydra.sweeper.warm_start={redact(source)} is neither a sweep folder nor a study in "
                        f"{redacted(where or '')} (it holds {', '.join(names) or 'no study'}). Fix: the folder of "
                        "the earlier sweep (outputs/NAME/sweeps/STUDY), or its study name in the same storage")
    folder = Path(source) if Path(source).is_dir() else None
    return optuna.load_study(study_name=name, storage=storage), folder


def seed_for(seed: int, source: str, storage_url: str | None) -> int:
    """The sampler's seed in a warm-started sweep: of this seed and the earlier study's name. With the seed alone,
    random search (and qmc) would draw the earlier sweep's points again over the same ranges (a draw depends on
    the seed, the trial number and the parameter), and its known points would be trained again."""
    return zlib.crc32(repr((seed, "warm start", open_source(source, storage_url)[0].study_name)).encode())


def top_points(source: str, top: int, storage_url: str | None) -> list[dict]:
    """The parameters of an earlier sweep's `top` best finished trials, best first (its Pareto front
    with several objectives). `source`: that sweep's folder, or a study's name in `storage_url`."""
    return [dict(t.params) for t in best_first(open_source(source, storage_url)[0])[:top]]


def known_points(source: str, top: int, storage_url: str | None, fixed: list[str], space: dict[str, BaseDistribution],
                 objective: tuple[list[str], list[str]], count: int = 1) -> tuple[list[dict], list[Known]]:
    """The earlier sweep's best points, as (points to train, points whose values are known here), each
    mismatch said in one line. `objective`: this sweep's (names, directions); `count`: its repeats."""
    study, folder = open_source(source, storage_url)
    trials, origin = best_first(study)[:top], f"warm start from {redact(source)}"
    differs = [*settings_differ(study, fixed, origin), *objective_differs(study, *objective),
               *repeats_differ(study, count, origin)]
    dropped = sorted({key for t in trials for key in t.params if key not in space})
    if dropped:
        log.warning("%s: %s not in this search space: dropped from its points (this sweep's setting instead)",
                    origin, ", ".join(dropped))
    train, known, why = [], [], set(differs)
    for t in trials:  # a parameter its own point leaves undrawn here (a condition) is dropped too
        point = only_active(t.params, space)
        drawn = [key for key in space if key not in point and is_active(key, point, space)]
        if differs or drawn or len(point) < len(t.params):
            train.append(point)
            why.update([*([f"{', '.join(drawn)} drawn here"] if drawn else []),
                        *(["parameters dropped"] if len(point) < len(t.params) else [])])
            continue
        run_dir = t.system_attrs.get("runner:run_dir")
        known.append(Known(point, list(t.values), f"{source} trial {t.number}",
                           str(folder / run_dir) if folder is not None and isinstance(run_dir, str) else None,
                           {key: t.user_attrs[key] for key in SPREAD if key in t.user_attrs}))
    if train:
        log.warning("%s: %d point%s trained again here, not taken as known (%s)", origin, len(train),
                    "s are" if len(train) > 1 else " is", "; ".join(sorted(why)))
    return train, known


def settings_differ(study: optuna.Study, fixed: list[str], origin: str) -> list[str]:
    """Why the earlier study's runs are not of this sweep's config (said in one line), or []."""
    theirs = study.user_attrs.get("fixed_overrides")
    if not (isinstance(theirs, list) and all(isinstance(o, str) for o in theirs)):
        log.warning("%s: its study does not record its fixed settings: its points are a start here", origin)
        return ["its fixed settings unknown"]
    if sorted(theirs) == sorted(fixed):
        return []
    there, here = [o for o in theirs if o not in fixed], [o for o in fixed if o not in theirs]
    log.warning("%s: its study ran other fixed settings (%s there; %s here): another experiment's best points are "
                "a start here, not its values", origin, " ".join(there) or "none", " ".join(here) or "none")
    return ["its fixed settings differ"]


def repeats_differ(study: optuna.Study, count: int, origin: str) -> list[str]:
    """Why the earlier study's values are not of this sweep's seeds per trial (said in one line), or []."""
    theirs = recorded_repeats(study)
    if theirs in (None, count):
        return []
    log.warning("%s: its study ran hydra.sweeper.repeats=%d (here %d): its values are means of another number of "
                "seeds, so its points are a start here, not its values", origin, theirs, count)
    return [f"it ran repeats={theirs}"]


def objective_differs(study: optuna.Study, names: list[str], directions: list[str]) -> list[str]:
    theirs = study.user_attrs.get("objectives") or study.metric_names
    if [d.name.lower() for d in study.directions] != list(directions) or (theirs and list(theirs) != list(names)):
        return [f"it optimized {', '.join(theirs or [d.name.lower() for d in study.directions])}"]
    return []


def copy_known_points(study: optuna.Study, known: list[Known], space: dict[str, BaseDistribution], origin: str) -> None:
    """A warm start's points of this very config: their values go into the study, nothing is trained again."""
    copied = 0
    for entry in known:
        problem = check_point(entry.point, space)
        if problem:
            log.warning("%s: %s is left out (%s)", origin, " ".join(as_overrides(entry.point)), problem)
            continue
        entry.point = {key: canonical(key, value, space[key]) for key, value in entry.point.items()}
        copied += copy_known(study, entry, space)
    if copied:
        log.warning("%s: %d point%s already known with this config (fixed settings, search space, objective): "
                    "copied into this study with %s values, not trained again (using none of n_trials)", origin,
                    copied, "s" if copied > 1 else "", "their" if copied > 1 else "its")


def copy_known(study: optuna.Study, known: Known, space: dict[str, BaseDistribution]) -> bool:
    """Add a known point with its value to this study (COMPLETE, using none of n_trials); False when it is
    there already (a rerun of the command, another worker, or the same point run here)."""
    for trial in study.get_trials(deepcopy=False):
        if trial.system_attrs.get(COPIED) == known.label or (trial.state.is_finished() and trial.params == known.point):
            return False
    study.add_trial(optuna.trial.create_trial(
        params=known.point, distributions={key: space[key] for key in known.point}, values=known.values,
        user_attrs={**known.spread, "copied_from": known.label, **({"copied_run_dir": known.run_dir} if known.run_dir else {})},
        system_attrs={COPIED: known.label}))
    return True


