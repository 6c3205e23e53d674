"""Known-good points first: `python -m runner -m ... 'hydra.sweeper.enqueue=[{optimizer.lr:0.005}]'`, and
`hydra.sweeper.warm_start=outputs/NAME/sweeps/STUDY` (an earlier sweep's best trials, run first in the
new, usually narrowed, one: coarse to fine in one step). Each point must lie in the search space.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.distributions import BaseDistribution

from runner.errors import UserError
from runner.study_storage import redacted, storage_for
from runner.sweep.results import best_first
from runner.sweep.space import canonical


def top_points(source: str, top: int, storage_url: str | None) -> list[dict]:
    """The parameters of an earlier sweep's `top` best finished trials, best first (its Pareto front
    with several objectives). `source`: that sweep's folder, or a study's name in `storage_url`."""
    journal = Path(source) / "study.journal"
    where = str(journal) if journal.is_file() else storage_url
    storage = storage_for(where) if where else None
    names = optuna.get_all_study_names(storage) if storage else []
    name = names[0] if journal.is_file() and len(names) == 1 else source  # a sweep folder holds one study
    if name not in names:
        raise UserError(f"hydra.sweeper.warm_start={source} is neither a sweep folder nor a study in {redacted(where)} "
                        f"(it holds {', '.join(names) or 'no study'}). Fix: the folder of the earlier sweep "
                        "(outputs/NAME/sweeps/STUDY), or its study name in the same storage")
    study = optuna.load_study(study_name=name, storage=storage)
    return [dict(t.params) for t in best_first(study)[:top]]


def check_point(point: dict, space: dict[str, BaseDistribution]) -> str | None:
    """Why a point cannot be a trial of this search space, or None."""
    for key, value in point.items():
        if key not in space:
            return f"{key} is not in the search space ({', '.join(space)})"
        try:
            canonical(key, value, space[key])
        except ValueError as error:
            return str(error)
    return None
