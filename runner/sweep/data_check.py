"""The sweep's data, checked once before the first trial: a missing or unreadable dataset stops the
sweep with its one line, instead of failing every trial until max_failure_rate (11 of 20 trials).

The check is the training start's (datasets.build_screened_splits: the files found, the splits not
empty, bad images refused), without building the decoded-image cache, which the first trial does.
Where no swept setting changes the resolved dataset node, every trial uses the base config's data:
it is judged there, once. Where one does (a swept dataset option, or a value it interpolates), one
config is not enough to judge: the dataset at the ends of the swept ranges and at each choice is
tried until one builds, and the sweep stops only when every one fails with the same message (the
problem does not come from the swept values). Otherwise the trials judge their own data.
hydra.sweeper.check_data=false skips the check (trials that see other files than this machine).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf, open_dict

from runner.common.errors import UserError, one_line

log = logging.getLogger("runner.sweep")

SKIP = "hydra.sweeper.check_data=false skips this check where the trials see other files than this machine"


def check(base: DictConfig | None, ends: dict[str, DictConfig], build: Callable[[DictConfig], str | None] | None = None
          ) -> None:
    """UserError when the data the trials would use cannot be built.

    base: the job's config with the fixed overrides alone (None where it does not compose); ends: the
    job's config at each end of a swept range and each choice, by that override.
    """
    build = build or problem_of
    base_data = resolved(base)
    varying = [override for override, config in ends.items() if resolved(config) != base_data]
    if base_data is not None and not varying:
        problem = build(base.dataset)
        if problem:
            raise UserError(f"before the first trial: {problem} ({SKIP})")
        return
    problems, tried = {}, []
    for override in ends:  # each swept value's dataset, once
        data = resolved(ends[override])
        if data is not None and data in tried:  # the same dataset as another swept value's
            continue
        tried.append(data)
        problem = build(ends[override].dataset)
        if problem is None:
            return  # some swept values have their data: each trial judges its own
        problems[override] = problem
    if problems and len(set(problems.values())) == 1:
        raise UserError(f"before the first trial, at every swept value ({', '.join(problems)}): "
                        f"{next(iter(problems.values()))} ({SKIP})")
    if problems:
        log.warning("the data could not be built at any of %s before the first trial: the trials will say which "
                    "values work (%s)", ", ".join(problems), "; ".join(problems.values()))


def resolved(config: DictConfig | None) -> dict | None:
    """The config's dataset node with its interpolations resolved, or None where it has none or does not resolve."""
    if config is None or "dataset" not in config:
        return None
    try:
        return OmegaConf.to_container(config.dataset, resolve=True)
    except Exception:  # noqa: BLE001 (a value that does not resolve: then it is not judged from this config)
        return None


def problem_of(dataset: DictConfig) -> str | None:
    """What the training start would say of this dataset (one line), or None when its splits build."""
    # here: Hydra imports the sweeper at every start, which need not load the data stack
    from runner.data import datasets

    dataset = dataset.copy()
    if "cache" in dataset:  # the cache is built by the first trial, not twice
        with open_dict(dataset):
            dataset.cache = "none"
    try:
        datasets.build_screened_splits(dataset)
    except UserError as error:
        return one_line(error)
    except Exception as error:  # noqa: BLE001 (a user's dataset code: whatever it raises, every trial would too)
        return (f"dataset {dataset.get('name')} cannot be built ({type(error).__name__}: {error}). "
                "Fix: make a single run with the same settings start (python -m runner ...)")
    return None
