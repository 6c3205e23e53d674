"""The models by name and their weights enums: `python -m runner.models timm 'convnext*'`.

timm: every `timm.list_models()` architecture, and every pretrained name with its tag
(`convnext_tiny.fb_in1k`, from `timm.list_models(pretrained=True)`). torchvision: every
classification model of `torchvision.models.list_models(module=torchvision.models)`, with its
weights enum's members (`IMAGENET1K_V2`, `DEFAULT`). A name that is not one is one line with the
closest matches.
"""

from __future__ import annotations

import difflib
import fnmatch
from functools import cache

from runner.common.errors import UserError
from runner.common.rules import fail

FAMILIES = ("timm", "torchvision")
CLOSEST = 5


@cache
def timm_names() -> tuple[str, ...]:
    import timm

    return tuple(sorted(set(timm.list_models()) | set(timm.list_models(pretrained=True))))


@cache
def torchvision_names() -> tuple[str, ...]:
    import torchvision

    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


def names(family: str, pattern: str = "*") -> list[str]:
    """The names of `family` (timm | torchvision) that match a shell pattern ('convnext*')."""
    if family not in FAMILIES:
        raise UserError(f"{family!r} is not a family of models. Fix: one of {', '.join(FAMILIES)}")
    every = timm_names() if family == "timm" else torchvision_names()
    return [name for name in every if fnmatch.fnmatchcase(name, pattern)]


def check_name(family: str, name) -> None:
    """Refuse a name `family` does not have, naming the closest ones and the listing command."""
    every = timm_names() if family == "timm" else torchvision_names()
    if isinstance(name, str) and name in every:
        return
    close = difflib.get_close_matches(str(name), every, n=CLOSEST, cutoff=0.6)
    stem = (close[0] if close else str(name)).split(".")[0].split("_")[0]
    listing = f"python -m runner.models {family} '{stem}*' lists them"
    fix = f"one of {', '.join(close)} ({listing})" if close else f"a {family} model name ({listing})"
    fail("model.name", name, f"is not a {family} model", fix)


def check_timm_pretrained(name: str) -> None:
    """pretrained=true on a timm architecture without weights (timm would silently start from scratch)."""
    import timm

    if "." in name or timm.models.get_pretrained_cfg(name) is not None:
        return
    tagged = [n for n in timm_names() if n.startswith(name + ".")]
    fail("model.name", name, "has no pretrained weights in timm",
         f"model.pretrained=false, or a name with weights ({', '.join(tagged[:CLOSEST]) or 'none of ' + name + '.*'}; "
         f"python -m runner.models timm '*.*' lists them)")


def weights_enum(name: str):
    import torchvision

    return torchvision.models.get_model_weights(name)


def weights_member(name: str, weights):
    """torchvision's weights enum member `weights` (IMAGENET1K_V2, DEFAULT) of model `name`."""
    enum = weights_enum(name)
    members = [*enum.__members__]  # with the alias DEFAULT
    if weights not in members:
        fail("model.weights", weights, f"is not a weights of torchvision's {name} ({enum.__name__})",
             f"model.weights={'|'.join(members)} (one of them), or model.weights=null")
    return enum[weights]
