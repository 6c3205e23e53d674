"""Per-layer histograms of `python -m runner trainer.log_histograms_every=N`, in TensorBoard every N updates:

    weights/<parameter>        the weights after the update
    updates/<parameter>        that update: the change of the weights it made
    update_ratio/<parameter>   |update| / |weights| (a scalar): the practice's rule of thumb wants about 1e-3;
                               far below, the layer hardly learns (lr too low); far above, it is unstable

The update is the one update that brings the step to a multiple of N (the weights kept on the device just before
it), not the change since the previous histogram: the 1e-3 rule is about one update, and N updates' change would
grow with N. Everything is computed on the device and read back in one transfer at those steps; the other
updates cost a modulo. Nothing here draws a random number or touches a gradient: training is the same on and off.

Buckets: BINS equal ones over [min, max]; bucket i holds the values in (limit[i-1], limit[i]] (the lowest
bucket also the minimum), as TensorBoard reads `add_histogram_raw`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

BINS = 32


class Histograms:
    """The histograms of one run's model, written by rank 0's `writer` every `every` updates."""

    def __init__(self, model: nn.Module | None, writer, every: int | None):
        self.model, self.writer, self.every = model, writer, every  # every None: off (OFF)
        self.before: list[torch.Tensor] | None = None  # the weights before a logged update

    def before_update(self, global_step: int) -> None:
        """Before update global_step + 1: keep the weights when that update is logged (a copy on the device)."""
        if self.every is not None and (global_step + 1) % self.every == 0:
            self.before = [p.detach().clone() for _, p in self.parameters()]

    def after_update(self, global_step: int) -> None:
        """After update global_step: at a multiple of `every`, the histograms and ratios of each parameter."""
        if self.before is None or global_step % self.every != 0:
            return  # not a logged step (or a resume began right before one: no weights before its update)
        parameters, before = self.parameters(), self.before
        self.before = None
        figures, counts = [], []
        for (_, weights), old in zip(parameters, before, strict=True):
            weights = weights.detach().float()
            change = weights - old.float()
            ratio = change.norm() / weights.norm().clamp_min(torch.finfo(torch.float32).tiny)
            for values in (weights, change):
                head, buckets = statistics(values)
                figures.append(head)
                counts.append(buckets)
            figures.append(ratio.reshape(1))
        figures = torch.cat(figures).cpu().tolist()  # the one wait for the device; then a copy
        counts = torch.stack(counts).cpu().tolist()
        for index, (name, _) in enumerate(parameters):
            row = figures[index * 11:(index + 1) * 11]  # 5 figures of the weights, 5 of the update, the ratio
            if not all(math.isfinite(x) for x in row[:10]):
                continue  # a diverging run (NaN/inf weights): no histogram; the meter stops the run in one line
            write_histogram(self.writer, f"weights/{name}", row[:5], counts[2 * index], global_step)
            write_histogram(self.writer, f"updates/{name}", row[5:10], counts[2 * index + 1], global_step)
            self.writer.add_scalar(f"update_ratio/{name}", row[10], global_step)

    def parameters(self) -> list[tuple[str, torch.Tensor]]:
        return list(self.model.named_parameters())


def statistics(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """([min, max, count, sum, sum of squares], the BINS bucket counts) of `values`, on their device (no wait)."""
    flat = values.reshape(-1)
    low, high = torch.aminmax(flat)
    width = ((high - low) / BINS).clamp_min(torch.finfo(torch.float32).tiny)
    # bucket i: (low + i*width, low + (i+1)*width]; the minimum (and a tensor of one value) in bucket 0.
    # In place: a large layer's temporaries are the histogram's main cost on the CPU. Non-finite values (a diverging
    # run) would give NaN indices (INT64_MIN as long): nan_to_num keeps them in range, and the caller skips the
    # tensor, its figures not being finite (no extra wait for the device)
    index = (flat - low).div_(width).ceil_().sub_(1).nan_to_num_(0.0).clamp_(0, BINS - 1).long()
    counts = torch.zeros(BINS, dtype=torch.int64, device=flat.device)
    counts.scatter_add_(0, index, torch.ones(1, dtype=torch.int64, device=flat.device).expand_as(index))  # exact
    count = torch.full((), float(flat.numel()), device=flat.device)
    return torch.stack([low, high, count, flat.sum(), torch.dot(flat, flat)]), counts


def write_histogram(writer, tag: str, figures: list[float], counts: list[int], global_step: int) -> None:
    """One histogram from `statistics`' figures; the bucket limits are the right edges of BINS equal buckets."""
    low, high, count, total, squares = figures
    width = (high - low) / BINS
    limits = [low + (i + 1) * width for i in range(BINS - 1)] + [high]
    writer.add_histogram_raw(tag, min=low, max=high, num=int(count), sum=total, sum_squares=squares,
                             bucket_limits=limits, bucket_counts=counts, global_step=global_step)


def describe(every: int | None) -> str | None:
    """The plan's line (None: off)."""
    if every is None:
        return None
    return (f"histograms of each layer's weights and last update every {every} update{'s' * (every != 1)} in "
            "TensorBoard (weights/, updates/, update_ratio/: about 1e-3 is healthy; trainer.log_histograms_every)")


OFF = Histograms(None, None, None)  # trainer.log_histograms_every=null, and ranks other than 0


def of(run) -> Histograms:
    """The run's histograms (rank 0 with a writer, trainer.log_histograms_every set), else OFF."""
    every = run.settings.log_histograms_every
    return OFF if every is None or run.writer is None else Histograms(run.model, run.writer, every)
