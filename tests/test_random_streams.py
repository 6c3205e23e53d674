"""Nothing that runs between updates touches training's random streams (issue: exactness with every feature on).

Early stopping and sweep pruning evaluate checkpoints inside the training process, the preflight checks
train a copy of the model, the first batch goes to TensorBoard, retention asks for the best checkpoint:
a run with all of them on trains bit-identical weights to a run with all of them off, straight or
interrupted and resumed.
"""

from __future__ import annotations

import optuna
import pytest

from runner.run import train_and_evaluate as train_job
from tests.conftest import TINY, assert_identical, compose_config
from tests.conftest import checkpoint_weights as weights

# dropout, augmentation and a deterministic run: every random stream the training draws from
RANDOM_STREAMS = [*TINY, "trainer.deterministic=true", "model.dropout=0.3", "dataset.augment=basic",
                  "trainer.epochs=4"]
EVERYTHING_BETWEEN_UPDATES = ["trainer.early_stopping.patience=50", "checks.preflight=true", "checks.strict=false",
                              "checkpoint.keep_last=2", "evaluate.after_training=true",
                              "evaluate.during_training=true"]


def pruned_trial_settings(tmp_path) -> list[str]:
    """A trial of a study with the median pruner, as the sweeper fills sweep.* (it never prunes: startup trials)."""
    storage = str(tmp_path / "study.journal")
    from runner.common.study_storage import storage_for

    study = optuna.create_study(study_name="s", storage=storage_for(storage), direction="maximize")
    trial = study.ask()
    return ["sweep.study=s", f"sweep.storage={storage}", f"sweep.trial={trial.number}",
            f"sweep.trial_id={trial._trial_id}", "sweep.pruner=median"]


@pytest.mark.slow
def test_every_feature_between_updates_on_trains_the_same_weights_as_all_off(tmp_path):
    train_job(compose_config(RANDOM_STREAMS), tmp_path / "off")
    on = [*RANDOM_STREAMS, *EVERYTHING_BETWEEN_UPDATES, *pruned_trial_settings(tmp_path)]
    train_job(compose_config(on), tmp_path / "on")
    train_job(compose_config([*on, "trainer.epochs=2"]), tmp_path / "resumed")  # stopped after epoch 2 ...
    train_job(compose_config(on), tmp_path / "resumed")  # ... and resumed to 4 (constant schedule)
    for run in ("on", "resumed"):
        for epoch in (3, 4):  # keep_last=2: the last two are there in every run
            assert_identical(weights(tmp_path / "off", epoch), weights(tmp_path / run, epoch))


def test_early_stopping_alone_leaves_the_weights_alone_also_across_a_resume(tmp_path):
    train_job(compose_config(RANDOM_STREAMS), tmp_path / "off")
    patience = [*RANDOM_STREAMS, "trainer.early_stopping.patience=50"]
    train_job(compose_config([*patience, "trainer.epochs=2"]), tmp_path / "resumed")
    train_job(compose_config(patience), tmp_path / "resumed")  # continues from epoch 2 (constant schedule)
    train_job(compose_config(patience), tmp_path / "straight")
    for run in ("resumed", "straight"):
        assert_identical(weights(tmp_path / "off", 4), weights(tmp_path / run, 4))
