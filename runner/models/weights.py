"""Where pretrained weights come from: `python -m runner model=timm model.name=NAME model.weights_path=FILE`.

Three sources, one record each (`model.pretrained_weights`, written into run.json):
- a local file (`model.weights_path`): safetensors, a torch state dict, or a runner checkpoint;
- the Hugging Face hub cache (timm) and the torch hub cache (torchvision), filled by their own
  downloads, or ahead of time by `python -m runner.fetch_weights` on a machine with internet;
- `RUNNER_WEIGHTS=DIR`: a folder shared with offline jobs that both hub caches are pointed into.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from pathlib import Path

import torch
from torch import nn

from runner.common.errors import UserError

log = logging.getLogger(__name__)

FIRST_KEYS = 3  # how many keys a refusal names


def weights_home() -> Path | None:
    """The RUNNER_WEIGHTS folder, if set."""
    folder = os.environ.get("RUNNER_WEIGHTS")
    return Path(folder).expanduser().resolve() if folder else None


def use_weights_home() -> None:
    """Point the hub caches into RUNNER_WEIGHTS (when set), and make huggingface_hub see the environment.

    huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE into `huggingface_hub.constants` when it is first
    imported, and its downloads read those constants at call time (hf_hub_download, try_to_load_from_cache):
    so setting os.environ alone is not enough once it is imported, and the constants are set too.
    torch.hub.get_dir() reads TORCH_HOME at every call.
    """
    home = weights_home()
    if home is not None:
        os.environ["HF_HUB_CACHE"] = str(home / "huggingface")
        os.environ["TORCH_HOME"] = str(home / "torch")
    if "huggingface_hub.constants" in sys.modules or home is not None:
        from huggingface_hub import constants

        if "HF_HUB_CACHE" in os.environ:
            constants.HF_HUB_CACHE = os.environ["HF_HUB_CACHE"]
        offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
        constants.HF_HUB_OFFLINE = offline


def cache_folders() -> list[str]:
    """Where the hubs look for weights now: the Hugging Face hub cache and torch hub's checkpoints folder."""
    from huggingface_hub import constants

    return [str(constants.HF_HUB_CACHE), str(Path(torch.hub.get_dir()) / "checkpoints")]


def fetch_failed(model: str, error: Exception) -> UserError:
    """The one line for pretrained weights that could not be fetched (no internet, nothing cached)."""
    gist = " ".join(str(error).split())[:160] or type(error).__name__
    return UserError(
        f"model.pretrained=true: the weights of {model} are not in the caches ({' and '.join(cache_folders())}) "
        f"and could not be downloaded ({gist}). Fix: on a machine with internet run "
        f"`python -m runner.fetch_weights {fetch_overrides(model)}` and share its RUNNER_WEIGHTS=DIR with the job, "
        "or give a local file with model.weights_path=FILE")


def fetch_overrides(model: str) -> str:
    """The overrides that name `model` ("timm resnet18.a1_in1k" or "torchvision resnet50 IMAGENET1K_V2")."""
    family, name, *weights = model.split()
    # the fetch builds what these settings build: model.pretrained=false (the default) would fetch nothing
    return f"model={family} model.name={name}" + (f" model.weights={weights[0]}" if weights else " model.pretrained=true")


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hub_record(name: str, source: str, file: str | Path | None) -> dict:
    """What a model built from hub weights started from; the file is the cached one the hub read."""
    if file is None or not Path(file).is_file():
        return {"name": name, "source": source, "file": None, "sha256": None}
    file = Path(file).resolve()
    return {"name": name, "source": source, "file": str(file), "sha256": sha256_of(file)}


def timm_cached_file(pretrained_cfg: dict) -> str | None:
    """The file timm read its pretrained weights from (Hugging Face hub cache, or torch hub for a url)."""
    from huggingface_hub import try_to_load_from_cache

    hub_id = pretrained_cfg.get("hf_hub_id")
    if hub_id:
        names = [pretrained_cfg["hf_hub_filename"]] if pretrained_cfg.get("hf_hub_filename") else \
            ["model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]
        for filename in names:
            found = try_to_load_from_cache(hub_id, filename)
            if isinstance(found, str):
                return found
    return url_cached_file(pretrained_cfg.get("url"))


def url_cached_file(url: str | None) -> str | None:
    """torch.hub.load_state_dict_from_url's cached file for `url` (torchvision's weights; old timm urls)."""
    if not url:
        return None
    file = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])
    return str(file) if file.is_file() else None


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A file's tensors: safetensors, a torch state dict, or a runner checkpoint's "model" entry."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"model.weights_path={str(path)!r} does not exist. Fix: give the path of a weights file "
                        "(.safetensors, a torch state dict, or a runner checkpoint)")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(file, device="cpu")
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(f"model.weights_path={str(path)!r} could not be read ({' '.join(str(error).split())[:160]}). "
                        "Fix: give a .safetensors file, a torch state dict or a runner checkpoint") from None
    for entry in ("model", "state_dict"):  # a runner checkpoint; a Lightning/timm training checkpoint
        if isinstance(state, dict) and isinstance(state.get(entry), dict):
            state = state[entry]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"model.weights_path={str(path)!r} holds no state dict of tensors. "
                        "Fix: save one with torch.save(model.state_dict(), FILE) or safetensors")
    return state


def load_weights_file(model: nn.Module, path: str | Path, head_prefixes: tuple[str, ...] | list[str],
                      name: str | None = None) -> dict:
    """Load a file's weights into `model`, all but its head (the keys starting with `head_prefixes`).

    A 3-channel stem in the file is adapted to the model's input channels by timm's rule (adapt_stem).
    Keys that do not fit refuse the file in one line, naming the first few and whether they are
    the head's or the body's. Returns the record of what the model started from.
    """
    head_prefixes = tuple(head_prefixes)
    state = read_state(path)
    file_head = last_module_prefix(state)
    state = {key: value for key, value in state.items() if not key.startswith(head_prefixes)}
    expected = {key: value for key, value in model.state_dict().items() if not key.startswith(head_prefixes)}
    state = adapt_stem(state, expected)
    problems = fit_problems(state, expected, (*head_prefixes, file_head) if file_head else head_prefixes)
    if problems:
        shown = "; ".join(problems[:FIRST_KEYS]) + (f"; {len(problems)} keys in all" if len(problems) > FIRST_KEYS else "")
        raise UserError(f"model.weights_path={str(path)!r} does not fit this model ({shown}). Fix: use weights "
                        "saved from the same architecture (the model.name they came from), or model.weights_path=null")
    model.load_state_dict(state, strict=False)
    file = Path(path).resolve()
    return {"name": name or file.stem, "source": "file", "file": str(file), "sha256": sha256_of(file)}


def last_module_prefix(state: dict) -> str | None:
    """The module of a state dict's last key ("classifier.1." of "classifier.1.bias"): its head."""
    if not state:
        return None
    last = next(reversed(state))
    return last.rsplit(".", 1)[0] + "." if "." in last else None


def fit_problems(state: dict, expected: dict, head_prefixes: tuple[str, ...]) -> list[str]:
    """Each key that does not fit, in words: "the body's stem.0.weight is missing from the file"."""
    def part(key: str) -> str:
        return "the head's" if key.startswith(head_prefixes) else "the body's"

    problems = []
    for key, value in expected.items():
        if key not in state:
            problems.append(f"{part(key)} {key} is missing from the file")
        elif state[key].shape != value.shape:
            problems.append(f"{part(key)} {key} has shape {list(state[key].shape)} in the file, "
                            f"{list(value.shape)} in the model")
    problems += [f"{part(key)} {key} in the file is not in the model" for key in state if key not in expected]
    return problems


def adapt_stem(state: dict, expected: dict) -> dict:
    """A conv weight of 3 input channels where the model's has another count: adapted as timm adapts its stems."""
    from runner.models.stems import adapt_input_conv

    adapted = dict(state)
    for key, value in state.items():
        target = expected.get(key)
        if (target is not None and value.ndim == 4 and target.ndim == 4 and value.shape[1] == 3
                and target.shape[1] != 3 and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]):
            adapted[key] = adapt_input_conv(target.shape[1], value)
            log.info("model: the file's 3-channel stem %s adapted to %d input channels (%s)", key, target.shape[1],
                     "its filters summed" if target.shape[1] == 1 else "its filters repeated and scaled by 3/channels")
    return adapted
