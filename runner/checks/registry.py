"""The checks by name, in the order `python -m runner.check +experiment=flowers` runs them, and
the fast few that `python -m runner checks.preflight=true` runs before training.

Neural network training fails silently: everything runs and the result is quietly worse.
Each check is one experiment from the practice that catches such a bug early; it returns a
figure it measured, what was expected, a verdict (PASS, WARN, FAIL) and the fix.
"""

from __future__ import annotations

from collections.abc import Callable

from runner.checks import augmentation, data, model, pretrained_inputs, samples, spatial, training
from runner.checks.crash import crash_row
from runner.checks.setup import Result, Setup

CHECKS: dict[str, Callable[[Setup], Result]] = {
    "data": data.check_data,
    "pretrained_inputs": pretrained_inputs.check_pretrained_inputs,  # a pretrained model's inputs
    "splits": data.check_splits,
    "outliers": data.check_outliers,
    "loss_at_init": model.check_loss_at_init,
    "output_bias": model.check_output_bias,
    "overfit_batch": training.check_overfit_batch,
    "input_independent": training.check_input_independent,
    "augmentation_consistency": augmentation.check_augmentation_consistency,  # a short training, as the two above
    "batch_independence": samples.check_batch_independence,
    "spatial_dependencies": spatial.check_spatial_dependencies,  # within a sample, after across samples
    "gradients_flow": model.check_gradients_flow,
    "normalization": model.check_normalization,
    "train_eval_mode": model.check_train_eval_mode,
}

# checks that run the whole job, which the checks cannot import: the entries that can pass them in
# (python -m runner.check and python -m runner's preflight give runner/dry_run.py's)
ENTRY_CHECKS = ("dry_run",)

# no pass over the files and at most a few learning batches: seconds, even on the flagship
PREFLIGHT = ("data", "pretrained_inputs", "loss_at_init", "batch_independence", "spatial_dependencies", "gradients_flow",
             "normalization", "train_eval_mode", "dry_run")


def run(setup: Setup, names, entry_checks: dict[str, Callable[[Setup], Result]] | None = None) -> list[Result]:
    """The named checks (in the order above); one that crashes names whose code raised (crash.py)."""
    available = {**CHECKS, **(entry_checks or {})}
    results = []
    for name in [*CHECKS, *ENTRY_CHECKS]:
        if name not in names or name not in available:
            continue
        try:
            results.append(available[name](setup))
        except Exception as error:
            results.append(Result(name, *crash_row(error)))
    return results
