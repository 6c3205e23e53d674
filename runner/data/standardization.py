"""python -m runner model=timm model.name=convnext_tiny.fb_in1k model.pretrained=true: which mean/std the data is
standardized with, decided once, before anything is built from the config.

A model that starts from pretrained weights was trained on inputs standardized with its weights'
own mean/std (timm's pretrained_cfg, torchvision's weights' transforms); the practice's silent bug
is to start from those weights and keep another standardization. So dataset.mean/std follow the
weights, unless the user chose them:

    dataset.normalize=auto      the weights' mean/std, unless dataset.mean or dataset.std is set on the command line
    dataset.normalize=weights   the weights' mean/std, whatever dataset.mean/std say
    dataset.normalize=dataset   dataset.mean/std as configured (an experiment file that sets its own writes this)

`standardize_as_the_weights_expect` writes the choice into the config itself, in every command that
builds data from a training config (training and its dry run, runner.check, runner.lr_find,
runner.inspect_data), so the checkpoints' saved config carries it and the evaluator, which builds
its data from that config, standardizes as the training did.
"""

from __future__ import annotations

from omegaconf import DictConfig

from runner.common.errors import UserError
from runner.data.transforms import channel_stats
from runner.models.preprocessing import weights_preprocessing

NORMALIZE_CHOICES = ("auto", "weights", "dataset")
KEYS = ("dataset.mean", "dataset.std")


def set_on_command_line(overrides: list[str]) -> list[str]:
    """The overrides (Hydra's task overrides: `dataset.mean=[0,0,0]`, `++dataset.std=[1]`) that set dataset.mean/std."""
    return [o for o in overrides if o.lstrip("+~").split("=", 1)[0] in KEYS]


def expected_stats(preprocessing: dict, channels: int) -> tuple[list[float], list[float]]:
    """The weights' mean/std for `channels` input channels: a 3-channel stem adapted to one channel (its filters
    summed, as timm does) sees a grey level where it saw three equal channels, so the channels' average."""
    mean, std = [float(m) for m in preprocessing["mean"]], [float(s) for s in preprocessing["std"]]
    if channels == len(mean):
        return mean, std
    if channels == 1:
        return [sum(mean) / len(mean)], [sum(std) / len(std)]
    return [sum(mean) / len(mean)] * channels, [sum(std) / len(std)] * channels


def agrees(data: DictConfig, mean: list[float], std: list[float]) -> bool:
    """Does dataset.mean/std (one value: every channel) standardize as `mean`/`std` do, to float32 rounding?"""
    configured = channel_stats(data)
    return all(abs(a - b) <= 1e-6 for a, b in zip([*configured[0], *configured[1]], [*mean, *std], strict=True))


def shown(values) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in values) + "]"


def standardize_as_the_weights_expect(cfg: DictConfig, overrides: list[str]) -> str | None:
    """Set cfg.dataset.mean/std by dataset.normalize (above); returns the line to log, None for a model from scratch.

    `overrides`: the command line's (HydraConfig.get().overrides.task). The same config and command line give
    the same answer, so a resumed run decides as its first attempt did.
    """
    data = cfg.dataset
    normalize = data.get("normalize", "auto")
    preprocessing = weights_preprocessing(cfg.model)
    if preprocessing is None:
        if normalize == "weights":
            raise UserError("dataset.normalize='weights' but the model starts from no pretrained weights, so there "
                            "is no mean/std of theirs to follow. Fix: dataset.normalize=auto (dataset.mean/std), or "
                            "a pretrained model (model.pretrained=true or model.weights_path=FILE)")
        return None
    mean, std = expected_stats(preprocessing, data.channels)
    expect = f"mean {shown(mean)}, std {shown(std)} ({preprocessing['source']})"
    chosen = set_on_command_line(overrides)
    if normalize == "dataset" or (normalize == "auto" and chosen):
        why = "as set on the command line" if normalize == "auto" else "as configured (dataset.normalize=dataset)"
        return (f"standardizing with dataset.mean/std {why}: mean {shown(data.mean)}, std {shown(data.std)}"
                + (", as the weights expect" if agrees(data, mean, std) else f", though the weights expect {expect}")
                + size_note(preprocessing, data))
    aside = f"dataset.mean/std ({shown(data.mean)}, {shown(data.std)}) set aside"
    data.mean, data.std = mean, std
    return (f"standardizing with the weights' mean/std ({preprocessing['source']}): mean {shown(mean)}, "
            f"std {shown(std)}; {aside} (dataset.normalize={normalize}; to keep them: dataset.normalize=dataset)"
            + size_note(preprocessing, data))


def size_note(preprocessing: dict, data: DictConfig) -> str:
    """Where the run's image size is not the one the weights were trained at: said, with the setting that matches
    (not changed: a smaller size is a choice of speed, and fine-tuning at another size works)."""
    trained = preprocessing.get("input_size")
    size = list(data.image_size) if not isinstance(data.image_size, int) else [data.image_size] * 2
    if not trained or list(trained) == size:
        return ""
    how = f" ({preprocessing['interpolation']} resizing)" if preprocessing.get("interpolation") else ""
    return (f"; the weights were trained at {trained[0]}x{trained[1]}{how}, this run uses dataset.image_size="
            f"{size} (bilinear): dataset.image_size=[{trained[0]},{trained[1]}] matches them")


def record(cfg: DictConfig) -> dict:
    """run.json's `standardization`: the mean/std the data got and what the weights expect (null from scratch)."""
    preprocessing = weights_preprocessing(cfg.model)
    expected = None
    if preprocessing is not None:
        mean, std = expected_stats(preprocessing, cfg.dataset.channels)
        expected = {"mean": mean, "std": std, "source": preprocessing["source"],
                    "input_size": preprocessing.get("input_size"), "interpolation": preprocessing.get("interpolation")}
    return {"mean": list(cfg.dataset.mean), "std": list(cfg.dataset.std),
            "normalize": cfg.dataset.get("normalize", "auto"), "weights_expect": expected}
