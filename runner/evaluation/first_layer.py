"""python -m runner.evaluate run_dir=RUN: eval/first_layer.png, what the model learned to look at.

"Visualize the network's first-layer weights and ensure you get nice edges." The first layer the
input goes through (found by running one validation image through the best checkpoint's model):
a convolution's filters as RGB tiles (grey for other channel counts), or a linear layer's rows
reshaped to the input image, each tile normalized on its own; at the reference (the initial weights,
checkpoints/updates/update-00000000.pt of checkpoint.every_updates, when the run has them; else the
first checkpoint) and at the best checkpoint, side by side. A log line and a line in the figure
name the dead filters (all about zero) and those that did not move from the reference.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, on a cluster node or in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from runner.common import checkpoint_files  # noqa: E402
from runner.common.run_folders import relative  # noqa: E402
from runner.evaluation import averaged_weights, results  # noqa: E402
from runner.evaluation.checkpoint_model import model_of_checkpoint  # noqa: E402
from runner.evaluation.reports import save_png  # noqa: E402
from runner.evaluation.run_dirs import run_checkpoints  # noqa: E402

log = logging.getLogger("runner.evaluate")

MOST_TILES = 64  # per panel: more filters than this are flagged all the same, the first 64 drawn
DEAD = 1e-3  # a filter whose norm is below this share of the layer's largest is dead
UNMOVED = 1e-2  # one that moved less than this share of the layer's median movement did not move
DEAD_FLOOR = 1e-6  # and dead in absolute terms: a norm below this times sqrt(fan_in) (a whole layer about 0 too)
UNMOVED_FLOOR = 1e-4  # and unmoved when it moved less than this share of its own reference norm (a layer mostly so)
INITIAL = "checkpoints/updates/update-00000000.pt"


def first_layer_key(model: torch.nn.Module, example: torch.Tensor) -> str | None:
    """The state-dict key of the weight of the first Conv2d or Linear the example goes through."""
    names = {module: name for name, module in model.named_modules()}
    seen: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda module, _: seen.append(names[module]))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    try:
        with torch.no_grad():
            model(example[None])
    finally:
        for hook in hooks:
            hook.remove()
    return f"{seen[0]}.weight" if seen else None


def as_images(weight: torch.Tensor, image_shape: tuple[int, ...]) -> torch.Tensor | None:
    """(filters, channels, height, width): a convolution's as they are, a linear layer's rows as the input image;
    None for a linear layer whose inputs are not the image's pixels."""
    if weight.dim() == 4:
        return weight.float()
    if weight.dim() == 2 and weight.shape[1] == int(np.prod(image_shape)):
        return weight.float().reshape(weight.shape[0], *image_shape)
    return None


def dead_filters(filters: torch.Tensor) -> list[int]:
    """Filters about zero beside the layer's largest, or in absolute terms (so a layer all about zero is all dead)."""
    norms = filters.flatten(1).norm(dim=1)
    floor = DEAD_FLOOR * filters[0].numel() ** 0.5
    return ((norms <= DEAD * norms.max()) | (norms <= floor)).nonzero().flatten().tolist()


def unmoved_filters(filters: torch.Tensor, reference: torch.Tensor) -> list[int]:
    """Filters whose change from the reference is tiny beside the layer's typical change (the median filter's):
    frozen, or shrunk by weight decay alone; or tiny beside the filter's own reference norm (so a layer that mostly
    did not move, its median about 0, is flagged too)."""
    moved = (filters - reference).flatten(1).norm(dim=1)
    own = UNMOVED_FLOOR * reference.flatten(1).norm(dim=1)
    return ((moved <= UNMOVED * moved.median()) | (moved <= own)).nonzero().flatten().tolist()


def mosaic(filters: torch.Tensor, columns: int) -> tuple[np.ndarray, int]:
    """The filters as tiles in a grid one pixel apart on white, each normalized to [0, 1] on its own (a constant one
    mid grey); RGB for 3 channels, grey (the channels' mean) otherwise. Returns (image, tiles drawn)."""
    count, channels, height, width = filters.shape
    rows = -(-count // columns)
    image = np.ones((rows * (height + 1) - 1, columns * (width + 1) - 1, 3), dtype=np.float32)
    for index, tile in enumerate(filters):
        tile = tile if channels == 3 else tile.mean(dim=0, keepdim=True).expand(3, height, width)
        low, high = float(tile.min()), float(tile.max())
        shown = (tile - low) / (high - low) if high > low else torch.full_like(tile, 0.5)
        top, left = (index // columns) * (height + 1), (index % columns) * (width + 1)
        image[top:top + height, left:left + width] = shown.permute(1, 2, 0).numpy()
    return image, count


def reference_of(run_dir: Path, best: str) -> str | None:
    """The weights the best is compared with: the initial ones when the run saved them, else its first checkpoint
    (None when that is the best itself)."""
    if (Path(run_dir) / INITIAL).is_file():
        return INITIAL
    first = next(iter(run_checkpoints(run_dir)), None)
    name = relative(first, run_dir) if first is not None else None
    return name if name != best else None


def draw(run_dir: Path, best: dict, example: torch.Tensor, trusted: list[str]) -> dict | None:
    """eval/first_layer.png of the best row's checkpoint, and a log line; returns what was found (None when the
    first layer is not a convolution or a linear layer on the pixels)."""
    path = Path(run_dir) / best["checkpoint"]
    state = checkpoint_files.load(path, parts=checkpoint_files.EVALUATED_PARTS)
    model = model_of_checkpoint(state["config"], state, path, torch.device("cpu"), trusted)
    key = first_layer_key(model, example.float())
    weights = averaged_weights.held(state, path).get(best.get("weights", "raw"), state["model"])  # best with ema
    filters = as_images(weights[key], tuple(example.shape)) if key in weights else None
    if filters is None:
        log.info("first_layer.png not drawn: the model's first layer (%s) is not a convolution or a linear layer on "
                 "the pixels", key)
        return None
    reference = reference_of(run_dir, best["checkpoint"])
    panels = [(f"best: {best['checkpoint']}" + ("" if weights is state["model"] else f" ({best['weights']})"), filters)]
    found = {"layer": key, "shape": list(filters.shape), "reference": reference, "dead": dead_filters(filters),
             "unmoved": []}
    if reference is not None:
        before = as_images(checkpoint_files.load(Path(run_dir) / reference, parts=("model",))["model"][key],
                           tuple(example.shape))
        found["unmoved"] = unmoved_filters(filters, before)
        role = "initial weights" if reference == INITIAL else "first checkpoint"
        panels.insert(0, (f"{role}: {reference}", before))
    line = flags_line(found)
    if found["dead"] or found["unmoved"]:
        log.warning("%s: %s", key, line)
    found["tiles"] = first_layer_png(panels, key, line, results.eval_dir_of(run_dir) / "first_layer.png")
    log.info("first_layer.png: %s, %d filters of %s", key, len(filters), "x".join(map(str, filters.shape[1:])))
    return found


def flags_line(found: dict) -> str:
    def named(indices: list[int]) -> str:
        return ", ".join(f"#{i}" for i in indices[:12]) + (f" and {len(indices) - 12} more" if len(indices) > 12 else "")

    count = found["shape"][0]
    parts = [f"{len(found['dead'])} dead (all about 0): {named(found['dead'])}"] if found["dead"] else []
    if found["dead"] and len(found["dead"]) == count:
        parts = [f"all {count} dead: the whole layer is dead (all about 0)"]
    if found["reference"] is None:
        parts.append("movement not measured (the best is the run's first checkpoint)")
    elif found["unmoved"] and len(found["unmoved"]) == count:
        parts.append(f"all {count} did not move: the whole layer did not move from {found['reference']}")
    elif found["unmoved"]:
        parts.append(f"{len(found['unmoved'])} did not move from {found['reference']}: {named(found['unmoved'])}")
    return "filters " + "; ".join(parts) if parts else f"no dead or unmoved filter (moved from {found['reference']})"


def first_layer_png(panels: list[tuple[str, torch.Tensor]], key: str, line: str, path: Path) -> int:
    """The panels side by side, the flags line below; returns the number of tiles drawn."""
    tiles = 0
    figure, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 5.2), squeeze=False)
    figure.subplots_adjust(left=0.03, right=0.97, top=0.84, bottom=0.12, wspace=0.08)
    for axis, (name, filters) in zip(axes[0], panels, strict=True):
        shown = filters[:MOST_TILES]
        image, drawn = mosaic(shown, columns=int(np.ceil(np.sqrt(len(shown)))))
        tiles += drawn
        axis.imshow(image, interpolation="nearest")
        more = f", the first {len(shown)} of {len(filters)}" if len(shown) < len(filters) else ""
        axis.set_title(f"{name}\n({len(filters)} filters{more})", fontsize=8)
        axis.axis("off")
    figure.suptitle(f"first layer {key}: {'x'.join(map(str, panels[0][1].shape[1:]))} per filter, each tile "
                    "normalized on its own; filters #0, #1, ... row by row", fontsize=9)
    figure.text(0.5, 0.04, line, ha="center", fontsize=8, wrap=True,
                color="firebrick" if "dead (" in line or "did not move" in line else "black")
    save_png(figure, path)
    return tiles
