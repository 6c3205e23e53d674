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
    weights_path = model_cfg.get("weights_path")
    if target == "runner.models.timm_model":
        from runner.models.timm_models import check_timm_settings

        check_timm_settings(model_cfg.get("name"), bool(model_cfg.get("pretrained")), weights_path,
                            model_cfg.get("freeze", "none"))
    elif target == "runner.models.torchvision_model":
        from runner.models.torchvision_models import check_torchvision_settings

        check_torchvision_settings(model_cfg.get("name"), model_cfg.get("weights"), bool(model_cfg.get("pretrained")),
                                   weights_path, model_cfg.get("freeze", "none"))
    if weights_path is not None and not Path(weights_path).is_file():
        fail("model.weights_path", weights_path, "does not exist",
             "give the path of a weights file (.safetensors, a torch state dict, or a runner checkpoint)")
