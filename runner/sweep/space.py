"""The search space of a sweep, in Hydra's sweep grammar, as Optuna distributions.

    optimizer.lr='tag(log, interval(1e-4, 1e-1))'    FloatDistribution(1e-4, 0.1, log=True)
    model.channels='int(interval(8, 64))'            IntDistribution(8, 64)
    trainer.batch_size='range(32, 257, 32)'          IntDistribution(32, 256, step=32)
    model='choice(convnet, resnet18)'                CategoricalDistribution
"""

from __future__ import annotations

import functools
import math
import re

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from hydra.errors import HydraException
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from runner.common.errors import UserError


def distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override."""
    value = override.value()
    if override.is_choice_sweep():
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():
        assert isinstance(value, RangeSweep)
        values = list(override.sweep_iterator(transformer=Transformer.encode))
        if not values:
            raise UserError(f"{override.input_line} is empty. Fix: range(start, stop, step) with stop past start")
        if all(isinstance(v, int) for v in values) and not value.shuffle:
            low, high = min(values), max(values)
            return IntDistribution(low, high, step=abs(int(value.step)))
        return CategoricalDistribution([round(v, 12) if isinstance(v, float) else v for v in values])
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        log = "log" in value.tags
        if log and value.start <= 0:
            raise UserError(f"{override.input_line}: a log interval needs a start > 0. Fix: tag(log, interval(1e-5, ...))")
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise UserError(f"{override.input_line} is not a sweep this sweeper knows. Fix: use interval, range or choice")


def canonical(key: str, value, distribution: BaseDistribution):
    """The value as the parameter holds it (a choice itself, an int for an integer range, a float), or a
    ValueError saying why it is not one of the parameter's values: of another type, or outside its range."""
    if isinstance(distribution, CategoricalDistribution):
        for choice in distribution.choices:
            if kind(value) == kind(choice) and value == choice:
                return choice
        raise ValueError(f"{key}={value!r} is outside its choices ({', '.join(map(repr, distribution.choices))})")
    if kind(value) != "number" or not math.isfinite(value):
        raise ValueError(f"{key}={value!r} is a {type(value).__name__}, not a number")
    if isinstance(distribution, IntDistribution) and value != int(value):
        raise ValueError(f"{key}={value!r} is not a whole number")
    value = int(value) if isinstance(distribution, IntDistribution) else float(value)
    if not distribution._contains(distribution.to_internal_repr(value)):
        raise ValueError(f"{key}={value!r} is outside its range {distribution}")
    return value


def kind(value) -> str:
    """What a value is for comparing it with a parameter's: True is not 1, nor "4" 4, but 4 is 4.0."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "number"
    return type(value).__name__


def parse(arguments: list[str], params_from_config: dict[str, str]) -> tuple[list[str], dict[str, BaseDistribution]]:
    """(fixed overrides, {key: distribution}); command-line sweeps win over the config file's."""
    parser = OverridesParser.create()
    lines = [f"{key}={value}" for key, value in params_from_config.items()]
    fixed, space = [], {}
    for override in parser.parse_overrides(lines) + parser.parse_overrides(list(arguments)):
        key = override.get_key_element()
        if override.is_sweep_override():
            space[key] = distribution(override)
            fixed = [line for line in fixed if not line.startswith(f"{key}=")]
        else:
            space.pop(key, None)
            fixed = [line for line in fixed if not line.startswith(f"{key}=")]
            fixed.append(override.input_line)
    return fixed, space


def end_overrides(key: str, distribution: BaseDistribution) -> list[str]:
    """The overrides at the ends of a parameter's range (each value of a choice): where a search space
    most often leaves what the config takes."""
    values = distribution.choices if isinstance(distribution, CategoricalDistribution) else (distribution.low,
                                                                                             distribution.high)
    return [f"{key}={format_value(value)}" for value in values]


def as_overrides(params: dict) -> list[str]:
    """A trial's parameters as command-line overrides (quoted as Hydra needs)."""
    return [f"{key}={format_value(value)}" for key, value in params.items()]


def format_value(value) -> str:
    """A parameter's value as Hydra's override grammar reads it back: a string quoted where it must be."""
    if isinstance(value, float):
        return repr(value)
    if value is None:
        return "null"
    if isinstance(value, str):
        return quoted(value)
    return str(value)


@functools.lru_cache(maxsize=4096)
def quoted(text: str) -> str:
    """The string bare where Hydra reads it back as itself, else in quotes: a comma ("a,b" is a sweep
    bare), spaces at its ends, a number's or null's look ("10", "null"), the grammar's characters.
    A choice of lists or dicts holds them as Hydra writes them ("[1,2]"): those stay bare."""
    if reads_back(text, text) or is_written_element(text):
        return text
    candidates = [quote + escaped(text, quote) + quote for quote in ('"', "'")]
    return next((c for c in candidates if reads_back(c, text)), candidates[0])


def escaped(text: str, quote: str) -> str:
    """Hydra's escapes in a quoted value: a backslash before the quote, backslashes before it or at the end doubled."""
    text = re.sub(rf"(\\*){quote}", lambda m: m.group(1) * 2 + "\\" + quote, text)
    return re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text)


def reads_back(written: str, text: str) -> bool:
    """Does Hydra read `written` as the string `text`, alone and as an element of choice(...)?"""
    try:
        alone = parser().parse_override(f"k={written}").value()
        element = parser().parse_override(f"k=choice({written}, z)").value().list[0]
    except HydraException:
        return False
    return all(isinstance(v, str) and v == text for v in (alone, element))


def is_written_element(text: str) -> bool:
    """Is the string a list or dict as Hydra writes a choice's element ("[1,2]", "{a:1}")?"""
    try:
        value = parser().parse_override(f"k={text}").value()
    except HydraException:
        return False
    return isinstance(value, (list, dict)) and Transformer.str(value) == text


@functools.cache
def parser() -> OverridesParser:
    return OverridesParser.create()


def narrowed(space: dict[str, BaseDistribution], top_params: list[dict]) -> dict[str, str]:
    """Coarse to fine: for each parameter, the range the best trials span, widened a little.

    Numbers get the interval from the smallest to the largest value among the top trials,
    widened by a quarter of that span (in log space for log parameters) and kept inside the
    old bounds, on the old grid where the parameter had a step; choices keep the values the top
    trials used.
    """
    suggestion = {}
    for key, dist in space.items():
        values = [p[key] for p in top_params if key in p]
        if not values:
            continue
        if isinstance(dist, CategoricalDistribution):
            kept = [c for c in dist.choices if c in values]
            suggestion[key] = f"choice({', '.join(format_value(c) for c in kept)})"
            continue
        log = dist.log
        f = math.log if log else (lambda v: v)
        g = math.exp if log else (lambda v: v)
        low, high = f(min(values)), f(max(values))
        pad = 0.25 * (high - low) if high > low else 0.1 * (f(dist.high) - f(dist.low))
        new_low, new_high = max(g(low - pad), dist.low), min(g(high + pad), dist.high)
        step = None if log else dist.step
        if step is not None and step != 1:  # stay on the old grid: range(32, 97, 32), not int(interval(57, 71))
            first = dist.low + math.floor((new_low - dist.low) / step + 1e-9) * step
            last = min(dist.low + math.ceil((new_high - dist.low) / step - 1e-9) * step, dist.high)
            stop = last + (1 if isinstance(dist, IntDistribution) else step / 2)
            suggestion[key] = f"range({format_value(round(first, 10))}, {format_value(round(stop, 10))}, {format_value(step)})"
            continue
        if isinstance(dist, IntDistribution):
            interval = f"int(interval({math.floor(new_low)}, {math.ceil(new_high)}))"
        else:
            interval = f"interval({new_low:.4g}, {new_high:.4g})"
        suggestion[key] = f"tag(log, {interval})" if log else interval
    return suggestion


def check_point(point: dict, space: dict, naming: str = "") -> str | None:
    """Why a point (parameter -> value) cannot be a trial of this search space, or None; `naming` goes before
    the name of a parameter the space lacks ("its parameter ")."""
    for key, value in point.items():
        if key not in space:
            return f"{naming}{key} is not in the search space ({', '.join(space)})"
        try:
            canonical(key, value, space[key])
        except ValueError as error:
            return str(error)
    return None
