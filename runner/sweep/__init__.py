"""Hyperparameter sweeps on Optuna: `python -m runner -m hydra/sweeper=runner_optuna 'optimizer.lr=...'`.

space (search-space grammar), study (sampler, budget, lost trials), queued (trials the worker did
not create, checked before they run), results (files in the sweep directory). The training job's
side of a trial is runner/sweep/trial_link.py; both meet in the study's storage
(runner/common/study_storage.py). Only the Hydra glue, hydra_plugins/runner_sweeper, imports this package.
"""
