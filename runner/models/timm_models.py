"""Any timm model by name: `python -m runner model=timm model.name=convnext_tiny.fb_in1k model.pretrained=true`.

timm builds the new head (num_classes) and the stem (in_chans; a pretrained 3-channel stem is
adapted by summing/repeating its filters); its pretrained weights come through its own download
into the Hugging Face hub cache (or RUNNER_WEIGHTS), or from `model.weights_path`.
"""

from __future__ import annotations

import logging

from torch import nn

from runner.common.errors import UserError
from runner.models import names, weights
from runner.models.building import freeze_all_but_head, one_source

log = logging.getLogger(__name__)


def timm_model(name: str, num_classes: int, in_channels: int, pretrained: bool = False,
               weights_path: str | None = None, freeze: str = "none",
               activation_checkpointing: bool = False, drop_rate: float = 0.0,
               drop_path_rate: float = 0.0) -> nn.Module:
    """timm's `name` with a new classifier for num_classes and a stem for in_channels; drop_rate (timm's dropout
    before the classifier) and drop_path_rate (its stochastic depth) go to timm.create_model when above 0 (at 0
    timm builds the architecture's own default, which is no dropout and no drop path for nearly all of them)."""
    import timm

    check_timm_settings(name, pretrained, weights_path, freeze)
    weights.use_weights_home()
    record = None
    regularization = {key: value for key, value in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate))
                      if value}
    if pretrained:
        try:
            model = timm.create_model(name, pretrained=True, num_classes=num_classes, in_chans=in_channels,
                                      **regularization)
        except Exception as error:  # no internet and nothing cached, a proxy, a full disk
            raise weights.fetch_failed(f"timm {name}", error) from None
        config = model.pretrained_cfg
        full_name = f"{config.get('architecture', name)}.{config['tag']}" if config.get("tag") else name
        record = weights.hub_record(full_name, "timm hub", weights.timm_cached_file(config))
        if in_channels != 3:
            log.info("model: %s's pretrained 3-channel stem adapted by timm to %d input channels (%s)", name,
                     in_channels, "its filters summed" if in_channels == 1 else "its filters repeated and scaled")
    else:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels,
                                  **regularization)
        if weights_path is not None:
            record = weights.load_weights_file(model, weights_path, head_prefixes(model), name=name)
    if activation_checkpointing:
        try:
            model.set_grad_checkpointing(True)
        except Exception:
            raise UserError(f"model.activation_checkpointing=true: timm's {name} does not support it. "
                            "Fix: model.activation_checkpointing=false") from None
    freeze_all_but_head(model, freeze)
    model.pretrained_weights = record
    return model


def check_timm_settings(name, pretrained: bool, weights_path, freeze: str) -> None:
    """The settings' problems a user can fix, each one line (also run by validation, before any run folder)."""
    names.check_name("timm", name)
    if pretrained:
        names.check_timm_pretrained(name)
    one_source(pretrained, weights_path)
    freeze_all_but_head(None, freeze)


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """The state-dict prefixes of the classifier ("head.fc." ...; two for distilled models)."""
    classifier = model.pretrained_cfg.get("classifier") if hasattr(model, "pretrained_cfg") else None
    if classifier:
        return tuple(f"{c}." for c in ((classifier,) if isinstance(classifier, str) else classifier))
    head = model.get_classifier()
    return tuple(f"{n}." for n, m in model.named_modules() if m is head)
