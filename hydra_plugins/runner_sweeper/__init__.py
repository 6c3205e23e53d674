"""The `runner_optuna` Hydra sweeper (Hydra discovers plugins in the hydra_plugins namespace)."""
