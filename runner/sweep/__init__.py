"""Hyperparameter sweeps on Optuna: `python -m runner -m hydra/sweeper=runner_optuna 'optimizer.lr=...'`.

space (search-space grammar), study (storage, sampler, pruner, budget, lost trials), trial
(the training job's side), results (files in the sweep directory). The Hydra glue is in
hydra_plugins/runner_sweeper.
"""
