"""train_step (runner/training/loop.py): one optimizer update from one learning batch, measured alone.

The update against a plain reference (one forward and backward of the whole learning batch, one
step), the gradient synchronized only at the last micro-batch, and no host-device sync that grows
with the micro-batches (DESIGN.md: no `loss.item()` per step).
"""

from __future__ import annotations

import contextlib
import copy

import torch

from runner import models
from runner.common.runtime import seed_everything
from runner.data import datasets
from runner.training import loop
from runner.training.distributed import SINGLE, Processes
from runner.training.hooks import NO_HOOKS
from runner.training.learning_batches import LearningBatch
from runner.training.optim import build_optimizer
from runner.training.state import start
from tests.conftest import TINY, compose_config

# plain SGD with clipping: the reference below is then one line of arithmetic per weight
SGD_CLIPPED = [*TINY, "optimizer=sgd", "optimizer.lr=0.5", "optimizer.momentum=0.0", "optimizer.nesterov=false",
               "optimizer.weight_decay=0.0", "trainer.grad_clip_norm=0.01", "trainer.batch_size=12",
               "trainer.micro_batch_size=4"]


def training(overrides: list[str], tmp_path, processes=SINGLE):
    """The run as fit() builds it (start), with no TensorBoard writer, on the CPU."""
    cfg = compose_config(overrides)
    seed_everything(0, False)
    train_set = datasets.build_splits(cfg.dataset)["train"]
    model = models.build(cfg.model)
    return start(cfg, tmp_path, train_set, model, torch.device("cpu"), None, {}, processes, NO_HOOKS), train_set


def learning_batch(train_set, size: int, micro_batch_size: int, start_at: int = 12) -> LearningBatch:
    """`size` samples of the training set from `start_at` on, in micro-batches; the last one marked."""
    xs = torch.stack([train_set[i][0] for i in range(start_at, start_at + size)])
    ys = torch.tensor([train_set[i][1] for i in range(start_at, start_at + size)])
    chunks = [(xs[i:i + micro_batch_size], ys[i:i + micro_batch_size]) for i in range(0, size, micro_batch_size)]
    micro_batches = [(x, y, index == len(chunks) - 1) for index, (x, y) in enumerate(chunks)]
    return LearningBatch(start_at, size, iter(micro_batches))


def test_one_train_step_is_one_clipped_step_of_the_whole_learning_batch(tmp_path):
    run, train_set = training(SGD_CLIPPED, tmp_path)
    reference = copy.deepcopy(run.model)
    reference_optimizer = build_optimizer(run.cfg.optimizer, reference)
    xs = torch.stack([train_set[i][0] for i in range(12, 24)])
    ys = torch.tensor([train_set[i][1] for i in range(12, 24)])
    torch.nn.functional.cross_entropy(reference(xs), ys).backward()  # the mean over the 12 samples at once
    reference_norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.01)
    reference_optimizer.step()

    update = loop.train_step(run, learning_batch(train_set, 12, 4))

    assert update.samples == 12 and run.global_step == 1 and run.schedule.last_epoch == 1
    torch.testing.assert_close(update.grad_norm, reference_norm, rtol=1e-5, atol=1e-7)
    assert reference_norm > 0.01  # the clip acted
    for (name, got), expected in zip(run.model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7, msg=name)
        assert got.grad is None, f"{name}: the gradients are zeroed (set to None) after the update"
    assert int(run.first_bad_step) == -1


class SyncCounter(torch.nn.Module):
    """A stand-in for DDP: the wrapped model, and which micro-batches ran inside no_sync()."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.module, self.inside, self.calls = model, False, []

    @contextlib.contextmanager
    def no_sync(self):
        self.inside = True
        try:
            yield
        finally:
            self.inside = False

    def forward(self, x):
        self.calls.append("no_sync" if self.inside else "sync")
        return self.module(x)


def test_gradients_are_synchronized_once_per_learning_batch_at_its_last_micro_batch(tmp_path):
    run, train_set = training(SGD_CLIPPED, tmp_path, processes=Processes(rank=0, world_size=2))
    run.step_model = SyncCounter(run.model)
    loop.train_step(run, learning_batch(train_set, 12, 4))
    assert run.step_model.calls == ["no_sync", "no_sync", "sync"]


def host_reads_of_one_step(run, train_set, micro_batch_size: int) -> int:
    """How many times a tensor is read back to the host (item, float, int, bool, tolist) during one train_step."""
    reads = []
    real = {name: getattr(torch.Tensor, name) for name in ("item", "__float__", "__int__", "__bool__", "tolist")}

    def counted(name):
        return lambda self, *args: reads.append(name) or real[name](self, *args)

    with contextlib.ExitStack() as patches:
        for name in real:
            patches.callback(setattr, torch.Tensor, name, real[name])
            setattr(torch.Tensor, name, counted(name))
        loop.train_step(run, learning_batch(train_set, 12, micro_batch_size))
    return len(reads)


def test_more_micro_batches_add_no_host_device_sync(tmp_path, monkeypatch):
    """One micro-batch of 12 or six of 2: the same reads back to the host (the optimizer's own, none per
    micro-batch); a planted loss.item() per micro-batch is counted, so the count can see one."""
    run, train_set = training([*TINY, "trainer.grad_clip_norm=1.0"], tmp_path)
    run.global_step = 5  # past the first step's one-off report (the loss at init is read once a run)
    whole, six = host_reads_of_one_step(run, train_set, 12), host_reads_of_one_step(run, train_set, 2)
    assert six == whole

    real_loss = loop.micro_batch_loss

    def loss_read_back_each_micro_batch(*arguments):
        out = real_loss(*arguments)
        out[0].item()
        return out

    monkeypatch.setattr(loop, "micro_batch_loss", loss_read_back_each_micro_batch)
    assert host_reads_of_one_step(run, train_set, 2) == whole + 6
