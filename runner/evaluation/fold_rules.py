"""The test look at a fold's run: `python -m runner.evaluate run_dir=RUN split=test allow_fold_test=true`.

A run trained with `dataset.folds=K dataset.fold=i` chose its best checkpoint on one fold of train+val:
it is one of K estimates that cross-validation averages (`runner.runs` groups them), not the final model.
The test split is for that final model (trained on all of train+val, chosen by the cross-validated
setting), looked at once; a look at a fold's run spends the look on the wrong model. So the evaluator
refuses it unless asked with `allow_fold_test=true`, and the test ledger still records the look.
"""

from __future__ import annotations

from runner.common.errors import UserError


def refuse_test_of_a_fold_run(config: dict, settings) -> None:
    """split=test of a run whose config (.hydra/config.yaml or a checkpoint's) trained on a fold: one line, unless
    settings.allow_fold_test. A run without folds, or from before them, passes."""
    if settings.split != "test" or settings.get("allow_fold_test", False):
        return
    dataset = config.get("dataset") or {}
    if dataset.get("folds") is None:
        return
    raise UserError(f"this run trained on fold {dataset.get('fold')} of {dataset['folds']} (dataset.fold="
                    f"{dataset.get('fold')} dataset.folds={dataset['folds']}): its validation was one fold, and the test "
                    "split is for the final model trained on all of train+val. Fix: compare the folds with "
                    "`python -m runner.runs outputs`, train the final model without dataset.folds and look at its "
                    "test split; or allow_fold_test=true to look at this run's anyway (the test ledger records it)")
