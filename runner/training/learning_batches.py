"""The micro-batches of each learning batch, as the training loop of `python -m runner` consumes them.

    for batch in learning_batches(loader, skip, samples_per_epoch, batch_size, processes, meter):
        for x, y, last in batch.micro_batches:    # last: this process's final micro-batch
            ...                                   # forward, backward (accumulate)
        ...                                       # one optimizer update (training/loop.py: train_step)

A learning batch is `batch_size` consecutive samples of the epoch's order (the last one may be
smaller); with several processes each takes its share of every learning batch. The sampler deals
the order so that micro-batches never straddle two learning batches (config validation requires
batch_size to be a multiple of micro_batch_size times the processes).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from runner.training.distributed import Processes


@dataclass
class LearningBatch:
    start: int  # the position of its first sample in the epoch's order (all processes together)
    size: int  # samples in the whole learning batch (all processes together)
    micro_batches: Iterator  # (x, y, last) of this process's share

    @property
    def end(self) -> int:
        return self.start + self.size


def learning_batches(loader, skip: int, samples_per_epoch: int, batch_size: int, processes: Processes,
                     meter) -> Iterator[LearningBatch]:
    """The epoch's learning batches from sample `skip` on; the time spent waiting for data goes to meter.data_wait."""
    batches = timed(iter(loader), meter)
    start = skip
    while start < samples_per_epoch:
        size = min(batch_size, samples_per_epoch - start)
        share = len(range(processes.rank, size, processes.world_size))
        yield LearningBatch(start, size, share_of(batches, share))
        start += size
    for _ in batches:  # the sampler and the learning batches must agree: never train on a sample twice or drop one
        raise RuntimeError(f"the loader yields more than the {samples_per_epoch - skip} samples of this epoch")


def share_of(batches: Iterator, share: int) -> Iterator:
    """Micro-batches until `share` samples have come; marks the last one."""
    taken = 0
    while taken < share:
        try:
            x, y = next(batches)
        except StopIteration:  # raised inside a generator it would become an unclear RuntimeError
            raise RuntimeError(f"the loader ran out {share - taken} samples before the end of a learning batch; "
                               "the sampler and the windows must agree") from None
        taken += len(y)
        yield x, y, taken >= share


def timed(batches: Iterator, meter) -> Iterator:
    while True:
        wait_start = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            return
        meter.data_wait += time.perf_counter() - wait_start
        yield batch
