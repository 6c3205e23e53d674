"""A trial's link to its study: pruning stops unfinished work only."""

from __future__ import annotations

import json

import optuna
import pytest

from runner.common.study_storage import storage_for
from runner.run import train_and_evaluate as train_job
from tests.conftest import TINY, compose_config


def test_a_trial_that_has_finished_its_epochs_is_never_pruned(tmp_path, monkeypatch):
    """successive_halving pruned trials after epoch 4 of 4: complete results recorded PRUNED, out of the best."""
    storage = str(tmp_path / "study.journal")
    study = optuna.create_study(study_name="s", storage=storage_for(storage), direction="maximize")
    trial = study.ask()
    asked = []
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: asked.append(1) or True)  # always "prune"
    sweep = [f"sweep.storage={storage}", f"sweep.trial_id={trial._trial_id}", f"sweep.trial={trial.number}",
             "sweep.study=s", "sweep.pruner=successive_halving"]
    result = train_job(compose_config([*TINY, "trainer.epochs=1", *sweep]), tmp_path / "run")
    assert result["train"]["epoch"] == 1
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "finished"
    assert list(study.trials[0].intermediate_values) == [1]  # reported, not pruned

    with pytest.raises(optuna.TrialPruned):  # before the last epoch the pruner decides
        train_job(compose_config([*TINY, "trainer.epochs=3", *sweep]), tmp_path / "longer")
