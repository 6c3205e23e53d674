"""python -m runner -m ... 'optimizer=choice(sgd, adamw)' 'optimizer.momentum=interval(0.8, 0.99)'
'hydra.sweeper.when={optimizer.momentum:{optimizer:sgd}}'

Conditional search spaces: a parameter drawn only when others have given values (Optuna's define-by-run:
a trial asks for it only then). `hydra.sweeper.when` maps a parameter to its condition, {parent: value} or
{parent: [values]}: each parent named must have one of its values (several parents: all of them). A search
file (conf/search/*.yaml) holds the same mapping as `when:` beside `params:`. A parameter whose condition
fails is not drawn and not passed to the run (its config keeps its own default); trials.csv leaves it empty.
"""

from __future__ import annotations

from optuna.distributions import BaseDistribution, CategoricalDistribution

from runner.common.errors import UserError
from runner.sweep import space
from runner.sweep.space import canonical, format_value, kind


class Space(dict):
    """{parameter: distribution}, each parent before the parameters that depend on it, and `when`:
    {parameter: {parent: (values, ...)}}. A dict, so that every function taking a search space takes it."""

    def __init__(self, items, when: dict[str, dict[str, tuple]]):
        super().__init__(items)
        self.when = when


def when_of(search: dict) -> dict[str, dict[str, tuple]]:
    return getattr(search, "when", {})


def conditional(search: dict[str, BaseDistribution], when: dict) -> dict[str, BaseDistribution]:
    """The search space with its conditions (checked, one line on the first bad one); without any, as it was."""
    if not when:
        return search
    if not isinstance(when, dict):
        raise UserError(f"hydra.sweeper.when is {when!r}, not a mapping of parameters to their conditions. Fix: e.g. "
                        "'hydra.sweeper.when={optimizer.momentum:{optimizer:sgd}}'")
    checked = {key: checked_condition(key, condition, search) for key, condition in when.items()}
    return Space(ordered(search, checked), checked)


def checked_condition(key: str, condition, search: dict[str, BaseDistribution]) -> dict[str, tuple]:
    example = f"Fix: e.g. 'hydra.sweeper.when={{{key}:{{optimizer:sgd}}}}'"
    if key not in search:
        raise UserError(f"hydra.sweeper.when names {key}, which is not in the search space ({', '.join(search)}). "
                        f"Fix: sweep {key} too (e.g. '{key}=interval(...)'), or drop its condition")
    if not isinstance(condition, dict) or not condition:
        raise UserError(f"hydra.sweeper.when.{key} is {condition!r}, not a mapping of parameters to values. {example}")
    checked = {}
    for parent, values in condition.items():
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        if parent not in search:
            raise UserError(f"hydra.sweeper.when: {key} is drawn only when {parent}={shown(values)}, but {parent} is "
                            f"not in the search space ({', '.join(search)}). Fix: sweep {parent} too (e.g. "
                            f"'{parent}=choice(...)'), or drop the condition")
        if not values:
            raise UserError(f"hydra.sweeper.when.{key}: {parent} has no values to be drawn under, so {key} would "
                            f"never be. {example}")
        if not isinstance(search[parent], CategoricalDistribution):  # a range's value is (almost) never drawn twice
            raise UserError(f"hydra.sweeper.when.{key}: {parent} is not a choice ({search[parent]!r}), so it would "
                            f"practically never take the values named and {key} would not be drawn. Fix: sweep "
                            f"'{parent}=choice(...)', or condition {key} on a parameter that is a choice")
        try:
            checked[parent] = tuple(canonical(parent, value, search[parent]) for value in values)
        except ValueError as error:
            raise UserError(f"hydra.sweeper.when.{key}: {parent}={shown(values)} is not one of {parent}'s values "
                            f"({error}). Fix: name values that {parent} takes") from None
    return checked


def ordered(search: dict[str, BaseDistribution], when: dict[str, dict[str, tuple]]) -> dict[str, BaseDistribution]:
    """The parameters with each parent first (a trial draws them in this order), else in their given order."""
    placed: dict[str, BaseDistribution] = {}
    while len(placed) < len(search):
        ready = [key for key in search if key not in placed and all(p in placed for p in when.get(key, {}))]
        if not ready:
            circle = [key for key in search if key not in placed]
            raise UserError(f"hydra.sweeper.when: the conditions of {', '.join(circle)} go round in a circle (each "
                            "waits for another to be drawn). Fix: condition a parameter only on ones that do not "
                            "depend on it")
        placed[ready[0]] = search[ready[0]]
    return placed


def shown(values: list) -> str:
    return format_value(values[0]) if len(values) == 1 else f"[{','.join(map(format_value, values))}]"


def same(value, wanted) -> bool:
    return kind(value) == kind(wanted) and value == wanted


def is_active(key: str, point: dict, search: dict) -> bool:
    """Is the parameter drawn, given the values of the parameters drawn before it? (A parent not drawn: no.)"""
    return all(parent in point and any(same(point[parent], v) for v in values)
               for parent, values in when_of(search).get(key, {}).items())


def only_active(point: dict, search: dict) -> dict:
    """The point without the parameters its own values leave undrawn (and without ones the space lacks)."""
    kept: dict = {}
    for key in search:
        if key in point and is_active(key, {**point, **kept}, search):
            kept[key] = point[key]
    return kept


def check_point(point: dict, search: dict, naming: str = "") -> str | None:
    """space.check_point, and a parameter the point gives although its own values leave it undrawn."""
    return space.check_point(point, search, naming) or failed_condition(point, search)


def failed_condition(point: dict, search: dict) -> str | None:
    """Why a point gives a parameter that its own values leave undrawn, or None. A parent the point leaves out
    is drawn later: its condition is not decided yet."""
    for key, condition in when_of(search).items():
        for parent, values in condition.items():
            if key in point and parent in point and not any(same(point[parent], v) for v in values):
                return (f"{key} is drawn only when {parent}={shown(list(values))} "
                        f"(the point has {parent}={format_value(point[parent])})")
    return None


def needs(key: str, search: dict) -> list[str]:
    """The overrides under which the parameter is drawn (its parents' first values, theirs first): a range's
    ends are composed with them, as a trial at them would be."""
    wanted: list[str] = []
    for parent, values in when_of(search).get(key, {}).items():
        for override in [*needs(parent, search), f"{parent}={format_value(values[0])}"]:
            if override not in wanted:
                wanted.append(override)
    return wanted


def narrowed(search: dict, lines: dict[str, str], parse) -> tuple[str | None, list[str]]:
    """Coarse to fine with conditions: each condition keeps the values the narrowed parents still take; a
    parameter none of whose condition's values is left is taken out of `lines` (said in the second item).
    Returns (the hydra.sweeper.when override of the kept conditions, or None; what was left out)."""
    kept, left_out = {}, []
    for key in search:  # parents first: a parent left out takes the parameters that depend on it along
        condition = when_of(search).get(key)
        if condition is None:
            continue
        narrowed_condition = {}
        for parent, values in condition.items():
            taken = parse(parent, lines[parent]) if parent in lines else None
            narrowed_condition[parent] = [v for v in values if taken is not None and takes(taken, parent, v)]
        if all(narrowed_condition.values()):
            if key in lines:
                kept[key] = narrowed_condition
            continue
        lines.pop(key, None)
        text = " and ".join(f"{parent}={shown(list(values))}" for parent, values in condition.items())
        left_out.append(f"{key}: drawn only when {text}, which none of the top trials used")
    if not kept:
        return None, left_out
    inner = ",".join(f"{key}:{{{','.join(f'{p}:[{shown_all(v)}]' for p, v in c.items())}}}" for key, c in kept.items())
    return f"hydra.sweeper.when={{{inner}}}", left_out


def shown_all(values: list) -> str:
    return ",".join(map(format_value, values))


def takes(distribution: BaseDistribution, key: str, value) -> bool:
    try:
        canonical(key, value, distribution)
    except ValueError:
        return False
    return True
