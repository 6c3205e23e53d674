"""The hooks training calls (runner/training/hooks.py): filled by runner/run.py, each run with training's
random streams put back, so that a hook that draws random numbers cannot change the trained weights.

A run with every real hook on against one with none: tests/test_random_streams.py.
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import numpy as np
import torch

from runner.run import hooks_for
from runner.training import hooks as hooks_module
from runner.training.hooks import Hooks
from runner.training.job import train_job
from tests.conftest import TINY, compose_config
from tests.conftest import checkpoint_weights as weights

CPU = torch.device("cpu")


def draws() -> tuple:
    """The next numbers of every stream training draws from: torch's, Python's and NumPy's."""
    return torch.rand(4).tolist(), random.random(), float(np.random.rand())


def seed(value: int) -> None:
    torch.manual_seed(value)
    random.seed(value)
    np.random.seed(value)


def drawing(returns=None):
    """A hook that draws from every random stream, then returns `returns`."""
    def hook(*arguments):
        draws()
        torch.randn(100)
        return returns
    return hook


def drawing_hooks(best=None, why=None, row=None) -> Hooks:
    return Hooks(preflight=drawing(), best_checkpoint=drawing(best), stop_early=drawing(why), evaluate=drawing(row),
                 after_checkpoint=drawing())


def test_every_hook_runs_with_the_random_streams_put_back_and_answers_as_it_returned():
    hooks = drawing_hooks(best=Path("best.pt"), why="no better for 3 checkpoints", row={"top1": 0.5})
    calls = {
        "preflight": lambda: hooks.run_preflight({}, CPU),
        "best_checkpoint": hooks.best_so_far,
        "after_checkpoint": lambda: hooks.report_checkpoint(Path("epoch-0001.pt"), 1),
        "stop_early": lambda: hooks.stop_reason(Path("epoch-0001.pt")),
        "evaluate": hooks.run_evaluation,
    }
    answers = {}
    for name, call in calls.items():
        seed(7)
        expected = draws()
        seed(7)
        answers[name] = call()
        assert draws() == expected, f"{name} changed training's random streams"
    assert answers == {"preflight": None, "best_checkpoint": Path("best.pt"), "after_checkpoint": None,
                       "stop_early": "no better for 3 checkpoints", "evaluate": {"top1": 0.5}}


def test_a_missing_hook_is_not_run_and_answers_none():
    hooks = Hooks()
    assert (hooks.best_so_far(), hooks.stop_reason(Path("x")), hooks.run_evaluation()) == (None, None, None)


# dropout draws from torch's stream at every step: a draw between epochs would change epoch 2's masks
DROPOUT = [*TINY, "trainer.deterministic=true", "model.dropout=0.3", "checkpoint.keep_last=1"]


def test_hooks_that_draw_random_numbers_train_the_same_weights_as_no_hooks(tmp_path, monkeypatch):
    """Every hook draws (retention's best, the pruner's report and early stopping after each checkpoint,
    the preflight before, the evaluation after): bit-identical weights. Without the streams put back,
    the same hooks change them, so the comparison can see a hook that draws."""
    train_job(compose_config(DROPOUT), tmp_path / "none")
    train_job(compose_config(DROPOUT), tmp_path / "drawing", drawing_hooks())
    none, drawn = weights(tmp_path / "none", 2), weights(tmp_path / "drawing", 2)
    assert all(torch.equal(none[key], drawn[key]) for key in none)

    monkeypatch.setattr(hooks_module, "random_state_kept", contextlib.nullcontext)
    train_job(compose_config(DROPOUT), tmp_path / "unkept", drawing_hooks())
    unkept = weights(tmp_path / "unkept", 2)
    assert not all(torch.equal(none[key], unkept[key]) for key in none)


def test_run_py_fills_the_hooks_the_config_asks_for(tmp_path):
    off = hooks_for(compose_config(TINY), tmp_path, None)
    assert (off.preflight, off.stop_early, off.evaluate, off.after_checkpoint) == (None, None, None, None)
    assert off.best_checkpoint is not None and off.validation_metric is not None  # asked only when needed
    on = hooks_for(compose_config([*TINY, "checks.preflight=true", "trainer.early_stopping.patience=3",
                                   "evaluate.after_training=true"]), tmp_path, None)
    assert None not in (on.preflight, on.stop_early, on.evaluate)
