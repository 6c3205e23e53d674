"""The training crop's size per epoch: `python -m runner +experiment=flowers trainer.progressive_resize='{start:0.5,end_epoch:0.75}'`.

Progressive resizing trains the early epochs on smaller crops (cheaper: the work of a ConvNet
grows with the pixels) and the later ones at the final size, `dataset.image_size`, the size
the evaluator and the checks always use. Epoch e (from 0) of E trains at

    raw = final x (start + (1 - start) x min(1, e / (end_epoch x E)))

in each dimension: a line from start x final at the first epoch to the final size once
end_epoch of the epochs are done (a ramp over all epochs, end_epoch=1, stops just short of
it). The raw size is rounded to the nearest multiple of 16 pixels, or to the final size
where that is nearer (halves go up), so it never exceeds the final size, takes few distinct
values and lands on sizes the hardware likes. A start that rounds below 16 pixels is refused
(`refusal`). With `trainer.compile=true` the size changes only between epochs, so the model is
compiled at most once per size; torch's automatic dynamic shapes do better: the second size's
graph is compiled with a dynamic height and width and serves every later size (measured: 12
sizes, 2 graphs).

The size is a pure function of the epoch, computed exactly from the decimals as written
(fractions, not floats): a resumed run, also from mid-epoch, trains each epoch at the size
the uninterrupted run did. Plain Python: the settings' validation uses it before torch loads.
"""

from __future__ import annotations

import math
from fractions import Fraction

STEP = 16  # pixels: the sizes a ramp takes are multiples of it (or the final size)
DEFAULTS = {"start": 0.5, "end_epoch": 0.75}  # trainer.progressive_resize's keys, where a ramp leaves one out


def exact(value: float) -> Fraction:
    """A setting's decimal as written (0.3 is 3/10, not the nearest double)."""
    return Fraction(repr(value))


def rounded(raw: Fraction, final: int) -> int:
    """The nearest of the multiples of STEP around `raw` and the final size, never above the final; halves up."""
    below = STEP * math.floor(raw / STEP)
    candidates = [size for size in (below, below + STEP, final) if size <= final]
    return min(candidates, key=lambda size: (abs(size - raw), -size))


def size_at(epoch: int, epochs: int, final: tuple[int, int], start: float,
            end_epoch: float) -> tuple[int, int]:
    """(height, width) of epoch `epoch`'s training crops (the module docstring has the rule)."""
    progress = min(Fraction(1), Fraction(epoch) / (exact(end_epoch) * epochs))
    scale = exact(start) + (1 - exact(start)) * progress
    if progress == 1:
        return final
    return rounded(final[0] * scale, final[0]), rounded(final[1] * scale, final[1])


def sizes_per_epoch(epochs: int, final: tuple[int, int], start: float, end_epoch: float) -> list[tuple[int, int]]:
    """The whole plan, one (height, width) per epoch."""
    return [size_at(epoch, epochs, final, start, end_epoch) for epoch in range(epochs)]


def plan(ramp, epochs: int, image_size) -> list[tuple[int, int]] | None:
    """trainer.progressive_resize's sizes for the run (ramp: its settings, or None: off, the result too);
    image_size: dataset.image_size, an int or [height, width]."""
    if ramp is None:
        return None
    final = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
    return sizes_per_epoch(epochs, final, **{**DEFAULTS, **ramp})


def refusal(final: tuple[int, int], start: float) -> str | None:
    """Why this ramp cannot start where it is asked to (its first size rounds below STEP pixels), or None."""
    first = [rounded(side * exact(start), side) for side in final]
    if min(first) >= STEP:
        return None
    raw = "x".join(f"{float(side * exact(start)):g}" for side in final)
    smallest = math.ceil(Fraction(STEP) / min(final) * 100) / 100  # the start whose first size is STEP pixels
    fix = (f"trainer.progressive_resize.start={smallest:g} or more" if smallest <= 1
           else f"trainer.progressive_resize=null (dataset.image_size is below {STEP})")
    return f"starts at {raw} pixels, which rounds below {STEP}x{STEP}. Fix: {fix}"
