"""The model settings' checks before any run folder: `python -m runner model=timm model.name=convnxt_tiny`.

runner/config/schema.py's validate runs them after the builder's arguments are checked, so a
typo'd name, a weights enum member the model does not have or a weights file that is not
there is one line and exit 2, with nothing written. The builders run the same checks.
"""

from __future__ import annotations

from pathlib import Path

from runner.common.rules import fail


def validate_model(model_cfg) -> None:
    target = model_cfg.get("_target_")
    for key in ("drop_rate", "drop_path_rate"):  # runner's convnet, timm's and torchvision's models take them
        rate = model_cfg.get(key)
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate < 1):
            fail(f"model.{key}", rate, "must be in [0, 1): the probability of dropping", f"model.{key}=0.1, or 0 for none")
    weights_path = model_cfg.get("weights_path")
    if target == "runner.models.timm_model":
        from runner.models.timm_models import check_timm_settings

        check_timm_settings(model_cfg.get("name"), bool(model_cfg.get("pretrained")), weights_path,
                            model_cfg.get("freeze", "none"))
    elif target == "runner.models.torchvision_model":
        from runner.models.torchvision_models import (
            check_torchvision_settings,
            regularization_arguments,
        )

        check_torchvision_settings(model_cfg.get("name"), model_cfg.get("weights"), bool(model_cfg.get("pretrained")),
                                   weights_path, model_cfg.get("freeze", "none"))
        regularization_arguments(model_cfg.get("name"), model_cfg.get("drop_rate"), model_cfg.get("drop_path_rate"))
    if weights_path is not None and not Path(weights_path).is_file():
        fail("model.weights_path", weights_path, "does not exist",
             "give the path of a weights file (.safetensors, a torch state dict, or a runner checkpoint)")
