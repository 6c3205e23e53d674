"""The preprocessing a model's pretrained weights expect: `python -m runner model=timm model.name=convnext_tiny.fb_in1k model.pretrained=true`.

Weights were trained on inputs standardized one way (mean, std), at one size, resized with one
interpolation; feeding them others is the practice's silent bug. This reads it without any
download: timm's pretrained_cfg (in the installed timm), torchvision's weights enum
(transforms() and meta), or a runner checkpoint's own dataset.mean/std. dataset.mean/std follow
it (runner/data/standardization.py) and the pretrained_inputs check compares against it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from runner.models.weights import read_state

TIMM = "runner.models.timm_model"
TORCHVISION = ("runner.models.torchvision_model", "runner.models.resnet")


def weights_preprocessing(model_cfg) -> dict | None:
    """{"mean", "std", "input_size": [h, w], "interpolation", "source"} of the weights the model starts from;
    None for a model from scratch."""
    target = model_cfg.get("_target_")
    weights_path = model_cfg.get("weights_path")
    if weights_path and Path(weights_path).is_file():
        saved = runner_checkpoint_preprocessing(weights_path)
        if saved is not None:
            return saved
    pretrained = bool(model_cfg.get("pretrained")) or model_cfg.get("weights") is not None or bool(weights_path)
    if not pretrained:
        return None
    if target == TIMM:
        return timm_preprocessing(model_cfg.get("name"))
    if target in TORCHVISION:
        name = model_cfg.get("name") or f"resnet{model_cfg.get('depth')}"
        return torchvision_preprocessing(name, model_cfg.get("weights") or "DEFAULT")
    return None


def timm_preprocessing(name: str) -> dict | None:
    import timm

    config = timm.models.get_pretrained_cfg(name)
    if config is None:
        return None
    tagged = f"{config.architecture}.{config.tag}" if config.tag else name
    return {"mean": [float(m) for m in config.mean], "std": [float(s) for s in config.std],
            "input_size": [int(s) for s in config.input_size[1:]], "interpolation": str(config.interpolation),
            "source": f"timm pretrained_cfg of {tagged}"}


def torchvision_preprocessing(name: str, weights: str) -> dict | None:
    from runner.models.names import weights_member

    member = weights_member(name, weights)
    transforms = member.transforms()
    crop = list(transforms.crop_size)
    return {"mean": [float(m) for m in transforms.mean], "std": [float(s) for s in transforms.std],
            "input_size": crop * 2 if len(crop) == 1 else crop, "interpolation": transforms.interpolation.value,
            "source": f"torchvision {type(member).__name__}.{member.name}"}


def runner_checkpoint_preprocessing(path: str) -> dict | None:
    """A runner checkpoint's dataset.mean/std/image_size (what its weights were trained on); None for other files."""
    if Path(path).suffix == ".safetensors":
        return None
    file = Path(path).resolve()
    return checkpoint_preprocessing(str(file), file.stat().st_mtime_ns, file.stat().st_size)


@functools.lru_cache(maxsize=8)
def checkpoint_preprocessing(path: str, mtime_ns: int, size: int) -> dict | None:
    """Read once per file version: the standardization decision, run.json and the pretrained_inputs check each
    ask, and a checkpoint is the whole training state (mtime and size in the key: a rewritten file is read again)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        read_state(path)  # says in one line what is wrong with the file
        return None
    dataset = state.get("config", {}).get("dataset") if isinstance(state, dict) and "format_version" in state else None
    if not isinstance(dataset, dict) or dataset.get("mean") is None:
        return None
    size = dataset.get("image_size")
    return {"mean": [float(m) for m in dataset["mean"]], "std": [float(s) for s in dataset["std"]],
            "input_size": [size, size] if isinstance(size, int) else list(size) if size else None,
            "interpolation": dataset.get("interpolation"),  # runner does not record one
            "source": "the checkpoint's dataset.mean/std"}
