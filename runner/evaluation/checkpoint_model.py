"""python -m runner.evaluate run_dir=RUN: a checkpoint's model, built from the checkpoint's own saved config.

For the evaluator's rows (evaluator.py), the first-layer figure (first_layer.py) and runner.check's
views: only trusted callables are called (runner/common/trust.py), pretrained weights are not
fetched (the checkpoint holds every weight), and a config or weights that do not fit are one line.
"""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.errors import InstantiationException

from runner import models
from runner.common.errors import UserError
from runner.common.trust import require_trusted


def model_of_checkpoint(config: dict, state: dict, path: Path, device: torch.device, trusted: list[str]) -> torch.nn.Module:
    """The checkpoint's model, from its own config, in eval mode; only trusted callables are called."""
    require_trusted(config, trusted, source=str(path))  # the model and the data
    model_cfg = models.without_pretrained_weights(config["model"])  # the checkpoint holds every weight
    model_cfg.init_output_bias = "none"  # and the bias too
    try:
        model = models.build(model_cfg)
    except InstantiationException as error:  # its arguments do not fit its callable (checked on load for runner's)
        cause = error.__cause__ or error
        first = (str(cause).strip().splitlines() or [""])[0][:200]
        raise UserError(f"{path}: its saved model config does not build ({model_cfg._target_}: {first}). "
                        "Fix: evaluate it with the code and trust=[...] of the run that wrote it") from None
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        first = " ".join(str(error).split())[:240].rstrip(".")  # "Error(s) in loading state_dict for X: ..."
        raise UserError(f"{path} does not fit the model of its config ({model_cfg._target_}): {first}. "
                        "Fix: evaluate it with the run that wrote it") from None
    return model.to(device).eval()
