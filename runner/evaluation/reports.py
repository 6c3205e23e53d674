"""Figures of `python -m runner.evaluate` for the best checkpoint: confusion matrix, loss galleries.

"Know the output, not only the metric": a gallery shows the examples at the minimum, the
quartiles and the maximum of the per-example loss, each tile the input as the model saw it
(de-normalized for display) under its file name (its place in the split where the dataset has no
files), with its true class, the prediction (by class name where the dataset has them) and the loss.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, on a cluster node or in CI
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from runner.common.io import write_atomic, write_csv_atomic  # noqa: E402
from runner.data import introspect, transforms  # noqa: E402
from runner.evaluation import metrics  # noqa: E402

QUANTILES = {"min": 0.0, "q25": 0.25, "median": 0.5, "q75": 0.75, "max": 1.0}


def figures_exist(out_dir: Path) -> bool:
    return (out_dir / "confusion_matrix.png").exists()


def best_checkpoint_figures(log_probabilities: torch.Tensor, labels: torch.Tensor, dataset, dataset_cfg,
                            out_dir: Path) -> list[dict]:
    """A checkpoint's confusion matrix (png, csv) and loss galleries; returns its most confused pairs."""
    names = introspect.class_names(dataset, dataset_cfg.num_classes)
    predictions = log_probabilities.argmax(dim=1)
    confusion = metrics.confusion_matrix(predictions, labels, dataset_cfg.num_classes)
    confusion_matrix_png(confusion, names, out_dir / "confusion_matrix.png")
    write_csv_atomic(out_dir / "confusion_matrix.csv", ["true \\ predicted", *names],
                     [[name, *counts] for name, counts in zip(names, confusion.tolist(), strict=True)])
    mean, std = transforms.channel_stats(dataset_cfg)
    losses = -log_probabilities.gather(1, labels[:, None]).squeeze(1)
    loss_galleries(losses, predictions, labels, lambda i: dataset[i][0], names, mean, std, out_dir,
                   samples=sample_names(dataset, "val"))
    pairs = metrics.most_confused_pairs(confusion)
    for pair in pairs:
        pair["true_name"], pair["predicted_name"] = names[pair["true"]], names[pair["predicted"]]
    return pairs


LEGIBLE_CLASSES = 25  # more rows than this and names and counts no longer fit: show the most confused


def classes_to_show(confusion: torch.Tensor, limit: int = LEGIBLE_CLASSES) -> list[int]:
    """All classes when they fit; else those in the most confused pairs, most confused first."""
    c = confusion.shape[0]
    if c <= limit:
        return list(range(c))
    shown: list[int] = []
    for pair in metrics.most_confused_pairs(confusion, top=c * c):
        for cls in (pair["true"], pair["predicted"]):
            if cls not in shown and len(shown) < limit:
                shown.append(cls)
    return shown or list(range(limit))


def confusion_matrix_png(confusion: torch.Tensor, class_names: list[str], path: Path) -> None:
    """Row-normalized colours with the counts written in; at many classes the most confused ones."""
    shown = classes_to_show(confusion)
    part = confusion[shown][:, shown]
    rows = part.float() / confusion[shown].sum(dim=1, keepdim=True).clamp_min(1)  # of the whole true class
    size = 3 + 0.42 * len(shown)
    figure, axes = plt.subplots(figsize=(size + 1.5, size), layout="constrained")
    image = axes.imshow(rows.numpy(), cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in ((ij, int(part[ij])) for ij in itertools.product(range(len(shown)), repeat=2)):
        if count:
            axes.text(j, i, str(count), ha="center", va="center", fontsize=7,
                      color="white" if rows[i, j] > 0.5 else "black")
    names = [class_names[k][:18] for k in shown]
    axes.set_xticks(range(len(shown)), names, rotation=60, ha="right", fontsize=7)
    axes.set_yticks(range(len(shown)), names, fontsize=7)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    figure.colorbar(image, ax=axes, shrink=0.8, label="fraction of the true class")
    title = f"confusion matrix ({int(confusion.sum())} examples; counts in the cells)"
    if len(shown) < confusion.shape[0]:
        title = (f"the {len(shown)} most confused of {confusion.shape[0]} classes ({int(confusion.sum())} examples);\n"
                 "every class: confusion_matrix.csv")
    axes.set_title(title, fontsize=9)
    save_png(figure, path)


def gallery_indices(losses: torch.Tensor, quantile: float, count: int) -> list[int]:
    """`count` examples whose loss ranks nearest the quantile (the lowest for 0, the highest for 1)."""
    order = losses.argsort().tolist()
    count = min(count, len(order))
    centre = round(quantile * (len(order) - 1))
    start = min(max(centre - count // 2, 0), len(order) - count)
    return order[start:start + count]


def sample_names(dataset, split: str) -> list[str]:
    """What a person calls each sample: its file's name (image_00123.jpg; cat/001.jpg where names repeat across
    folders) where the dataset reads files, else
    its place in the split ('val 12')."""
    files = introspect.image_files(dataset)
    if files is None:
        return [f"{split} {i}" for i in range(len(dataset))]
    names = [path.name for path in files]  # an image folder repeats names across classes: add the class folder
    return names if len(set(names)) == len(names) else [f"{path.parent.name}/{path.name}" for path in files]


def loss_galleries(losses: torch.Tensor, predictions: torch.Tensor, labels: torch.Tensor,
                   load_image: Callable[[int], torch.Tensor], class_names: list[str],
                   mean: list[float], std: list[float], out_dir: Path, per_gallery: int = 8,
                   samples: list[str] | None = None, split: str = "val") -> list[Path]:
    """One PNG per quantile of the per-example loss: gallery_min.png ... gallery_max.png; each tile under its
    sample's name (`samples`; default: its place in the split)."""
    samples = samples or [f"{split} {i}" for i in range(len(labels))]
    paths = []
    for name, quantile in QUANTILES.items():
        indices = gallery_indices(losses, quantile, per_gallery)
        figure, axes = plt.subplots(1, len(indices), figsize=(2 * len(indices), 3.0), squeeze=False,
                                    layout="constrained")  # keeps the title clear of the captions
        for axis, index in zip(axes[0], indices, strict=True):
            image = transforms.denormalize(load_image(index), mean, std).permute(1, 2, 0).numpy()
            axis.imshow(image[..., 0] if image.shape[2] == 1 else image, cmap="gray", vmin=0, vmax=1)
            true, predicted = int(labels[index]), int(predictions[index])
            colour = "green" if true == predicted else "red"
            axis.set_title(f"{short(samples[index])}\ntrue {class_names[true][:18]}\npred {class_names[predicted][:18]}"
                           f"\nloss {float(losses[index]):.3f}", fontsize=7, color=colour)
            axis.axis("off")
        figure.suptitle(f"per-example loss at the {name}: {len(indices)} of {len(labels)} {split} samples "
                        "(green: right, red: wrong)", fontsize=9)
        path = out_dir / f"gallery_{name}.png"
        save_png(figure, path)
        paths.append(path)
    return paths


def short(name: str, width: int = 22) -> str:
    """A file name that fits under a tile: its end, which tells files apart (…_00123.jpg)."""
    return name if len(name) <= width else "…" + name[-(width - 1):]


def save_png(figure, path: Path) -> None:
    """Through the one atomic writer: a figure redrawn for a new best never shows half drawn."""
    write_atomic(path, lambda file: figure.savefig(file, format="png", dpi=100))
    plt.close(figure)
