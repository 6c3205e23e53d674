"""python -m runner.inspect_data +experiment=flowers

"Know your data": writes report.md with PNG figures into a run directory (and the figures to
TensorBoard): random samples as stored (before any augmentation) and as the model sees them, a
row of examples per class, histograms of pixel values per channel, of labels per split and of
image sizes, a micro-batch as mixup/cutmix mix it (when on), the outlier gallery of `runner.check`'s outliers check, the class table (classes
empty in a split or about twice its median flagged), and a note when the configured augmentation
flips images whose classes change when flipped. Prints where the report is.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from runner.checks import report_views  # noqa: E402
from runner.checks.data import scan_files  # noqa: E402
from runner.checks.pictures import Figures, as_model_sees, as_stored, grid  # noqa: E402
from runner.checks.setup import Setup, fmt, setup_for  # noqa: E402
from runner.common.io import write_atomic, write_text_atomic  # noqa: E402
from runner.common.run_folders import tensorboard_folder
from runner.data import introspect, transforms  # noqa: E402
from runner.data.mixing import mixing_of  # noqa: E402

log = logging.getLogger("runner.inspect_data")


def sample_figures(setup: Setup, names: list[str], labels: torch.Tensor, mean, std) -> Figures:
    """16 random training samples, as stored and as the model sees them."""
    train = setup.splits["train"]
    picks = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:16].tolist()
    titles = [names[int(labels[i])][:16] for i in picks]
    return {
        "samples_stored": (grid([as_stored(train, i, mean, std) for i in picks], titles, 8,
                                "random training samples, as stored"), "as stored (files, or de-normalized tensors)"),
        "samples_model_view": (grid([as_model_sees(train[i][0]) for i in picks], titles, 8,
                                    "the same samples as the model sees them (-3..3 std = black..white)"),
                               "after preprocessing: resizing, augmentation, standardization"),
    }


def mixing_figure(setup: Setup, names: list[str]) -> Figures:
    """With dataset.mixup/cutmix: 8 training samples as one micro-batch of the training step mixes them, each
    titled with its two labels and their weights (the larger is what train accuracy counts); {} when off."""
    mixing = mixing_of(setup.cfg.dataset)
    if mixing is None:
        return {}
    x, y = setup.batch(size=8)
    mixed, targets = mixing(x, y, seed=0)
    weights = targets.cpu().float()
    titles = []
    for row, own, partner in zip(weights, y.tolist(), y.flip(0).tolist(), strict=True):
        titles.append(f"{names[own][:10]} {row[own]:.0%}" if own == partner else
                      f"{names[own][:10]} {row[own]:.0%} / {names[partner][:10]} {row[partner]:.0%}")
    kind = "cutmix" if mixing.draw(0, *x.shape[-2:])[1] is not None else "mixup"
    return {"mixed": (grid([as_model_sees(image) for image in mixed.cpu()], titles, 8,
                           f"a micro-batch as the training step mixes it ({kind})"),
                      f"mixup/cutmix ({kind} in this draw): each image with its labels' weights; training accuracy "
                      "counts the dominant label")}


def per_class_figure(setup: Setup, names: list[str], labels: torch.Tensor) -> Figures:
    """A row of up to 8 examples for each of up to 12 classes spread over the label range."""
    train = setup.splits["train"]
    shown_classes = torch.linspace(0, setup.num_classes - 1, min(setup.num_classes, 12)).round().long().unique().tolist()
    per_class, per_class_titles = [], []
    for c in shown_classes:
        members = (labels == c).nonzero().flatten()[:8].tolist()
        per_class += [as_model_sees(train[i][0]) for i in members] + [None] * (8 - len(members))
        per_class_titles += [names[c][:16]] + [""] * 7
    kept = [(img, t) for img, t in zip(per_class, per_class_titles, strict=True) if img is not None]
    return {"per_class": (grid([k[0] for k in kept], [k[1] for k in kept], 8,
                               f"examples per class ({len(shown_classes)} of {setup.num_classes} classes)"),
                          "one row per class")}


def histograms_figure(setup: Setup, x: torch.Tensor, records: list) -> Figures:
    """Pixel values per channel (of the batch x), labels per split as grouped bars, image sizes (of files)."""
    panels = 3 if records else 2  # in-memory tensors have one size: no empty panel for it
    figure, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 3.8), layout="constrained")
    for c in range(x.shape[1]):
        axes[0].hist(x[:, c].flatten().numpy(), bins=60, alpha=0.5, label=f"channel {c}")
    axes[0].set_title("pixel values after preprocessing")
    axes[0].legend(fontsize=7)
    splits = [(split, dataset) for split, dataset in setup.splits.items() if len(dataset)]
    width = 0.8 / len(splits)
    for index, (split, dataset) in enumerate(splits):  # bars side by side: no split hides another
        counts = torch.bincount(introspect.labels_of(dataset), minlength=setup.num_classes)
        axes[1].bar([c + (index - (len(splits) - 1) / 2) * width for c in range(setup.num_classes)],
                    (counts / counts.sum()).numpy(), width=width, label=f"{split} ({int(counts.sum())})")
    axes[1].set_title("labels per split (fraction of the split)")
    axes[1].set_xlabel("class")
    axes[1].xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[1].legend(fontsize=7)
    if records:
        axes[2].scatter([w for _, (w, _), _ in records], [h for _, (_, h), _ in records], s=4, alpha=0.4)
        axes[2].set(xlabel="width", ylabel="height", title=f"image sizes ({len(records)} files)")
    return {"histograms": (figure, "pixel values per channel, labels per split, image sizes")}


def outliers_figure(records: list, broken: list[str], gray: list[str]) -> Figures:
    """The outliers check's extremes of size and shape and its grayscale images, as pictures."""
    by_area = sorted(records, key=lambda r: r[1][0] * r[1][1])
    by_aspect = sorted(records, key=lambda r: r[1][0] / r[1][1])
    chosen = [("smallest", by_area[0]), ("largest", by_area[-1]), ("tallest", by_aspect[0]),
              ("widest", by_aspect[-1])] + [("grayscale", next(r for r in records if r[0].name == g)) for g in gray[:4]]
    images = [transforms.load_image(path) for _, (path, _, _) in chosen]  # upright, as the model gets them
    named = "; ".join(f"{kind} {r[0].name} ({r[1][0]}x{r[1][1]})" for kind, r in chosen)
    return {"outliers": (grid(images, [f"{k}\n{r[0].name} {r[1][0]}x{r[1][1]}" for k, r in chosen], 4,
                              "outliers: extremes of size and shape, grayscale images"),
                         f"{named}. {len(gray)} grayscale; {len(broken)} files do not decode"
                         + (f": {', '.join(broken[:10])}" if broken else ""))}


def class_flags(counts: dict[str, torch.Tensor], c: int) -> str:
    """What stands out about class c's counts: none in a split, or about twice a split's median or more
    (labels wrapped by a cast pile one block of classes onto another: some doubled, others empty); beyond
    the counts' own noise (3 standard deviations of a Poisson count), so a small split flags nothing by chance."""
    flags = []
    for split, split_counts in counts.items():
        median, count = float(split_counts.median()), float(split_counts[c])
        if count == 0:
            flags.append(f"empty in {split}")
        elif median > 0 and count >= 1.75 * median and count - median > 3 * median**0.5:
            flags.append(f"{count / median:.1f}x the median in {split}")
    return ", ".join(flags)


def class_table(setup: Setup, names: list[str]) -> list[str]:
    """Markdown: each class's name, its count in every split, and a flag where a class is empty or doubled."""
    splits = [s for s, d in setup.splits.items() if len(d)]
    counts = {s: torch.bincount(introspect.labels_of(setup.splits[s]), minlength=setup.num_classes) for s in splits}
    flags = [class_flags(counts, c) for c in range(setup.num_classes)]
    flagged = sum(1 for f in flags if f)
    summary = [f"{flagged} classes flagged: empty in a split, or about twice its median count or more.", ""] if flagged else []
    return ["## classes", "", *summary, f"| class | name | {' | '.join(splits)} | flag |",
            "|" + " --- |" * (3 + len(splits)),
            *(f"| {c} | {names[c]} | {' | '.join(str(int(counts[s][c])) for s in splits)} | {flags[c]} |"
              for c in range(setup.num_classes)), ""]


def augmentation_note(setup: Setup) -> list[str]:
    """Markdown: a configured augmentation that flips the images of a dataset whose classes change when
    flipped (augmentation_consistency's finding, measured with a linear model on the pixels: seconds)."""
    from runner import models
    from runner.checks.augmentation import check_augmentation_consistency

    dataset = setup.cfg.dataset
    cheap = Setup(setup.cfg, setup.splits,
                  lambda init_output_bias=None: models.linear(setup.num_classes, dataset.channels, dataset.image_size),
                  setup.device)
    result = check_augmentation_consistency(cheap)
    if not result.details.get("flips_change_class"):
        return []
    log.warning("augmentation: %s %s (python -m runner.check checks=[augmentation_consistency] measures it)",
                result.verdict, result.fix)
    return ["## augmentation", "", f"**{result.verdict}**: {result.fix}.", "",
            f"Measured by python -m runner.check checks=[augmentation_consistency] (here with a linear model): "
            f"{result.figure}.", ""]


def files_section(cfg: DictConfig, setup: Setup, broken: list[str]) -> list[str]:
    """Markdown: image files that do not decode, and how many are converted on the way (by mode) or enlarged."""
    from runner.data.image_files import screen

    _, screening = screen(cfg.dataset, setup.splits, refuse_bad=False)
    said = screening.describe()
    if not said and not broken:
        return []
    lines = ["## files", ""]
    if broken:
        lines.append(f"- {len(broken)} do not decode: {', '.join(broken[:20])}")
    if said:
        lines.append(f"- {said.removeprefix('images: ')}")
    return [*lines, ""]


def write_report(figures: Figures, header: list[str], run_dir: Path) -> Path:
    """Each figure as NAME.png and in TensorBoard, and report.md that shows them under the header."""
    from torch.utils.tensorboard import SummaryWriter

    lines = list(header)
    with SummaryWriter(tensorboard_folder(run_dir)) as writer:
        for name, (figure, caption) in figures.items():
            write_atomic(run_dir / f"{name}.png", partial(figure.savefig, format="png", dpi=100))
            lines += [f"## {name.replace('_', ' ')}", "", caption, "", f"![{name}]({name}.png)", ""]
            writer.add_figure(f"data/{name}", figure)  # closes the figure
    write_text_atomic(run_dir / "report.md", "\n".join(lines))
    return run_dir / "report.md"


def inspect(cfg: DictConfig, run_dir: Path) -> int:
    setup = setup_for(cfg, torch.device("cpu"))
    train = setup.splits["train"]
    names = introspect.class_names(train, setup.num_classes)
    mean, std = transforms.channel_stats(cfg.dataset)
    labels = introspect.labels_of(train)
    figures = {**sample_figures(setup, names, labels, mean, std), **per_class_figure(setup, names, labels),
               **mixing_figure(setup, names)}
    x, _ = setup.batch(size=256)
    files = [f for ds in setup.splits.values() for f in (introspect.image_files(ds) or [])]
    records, broken, gray = scan_files(files, cfg.dataset.channels) if files else ([], [], [])
    figures |= histograms_figure(setup, x, records)
    if records:
        figures |= outliers_figure(records, broken, gray)
    plain = report_views.unaugmented_splits(cfg)
    neighbour_figures, sections = report_views.neighbours_section(cfg, plain, names)
    figures |= report_views.views_figure(setup, plain, names) | neighbour_figures
    if cfg.checks.checkpoint:
        loss_figures, loss_lines = report_views.highest_loss_section(setup, plain, names, cfg.checks.checkpoint)
        figures |= loss_figures
        sections += loss_lines
    header = [f"# Data report: {cfg.dataset.name}", "",
              f"{', '.join(f'{s}: {len(d)} samples' for s, d in setup.splits.items())}; {setup.num_classes} classes; "
              f"pixels after preprocessing: mean {fmt(x.mean(dim=(0, 2, 3)))}, std {fmt(x.std(dim=(0, 2, 3)))}", "",
              *files_section(cfg, setup, broken), *report_views.stretched_note(cfg, records), *augmentation_note(setup),
              *sections,
              *class_table(setup, names)]
    print(f"data report: {write_report(figures, header, run_dir)}")
    return 0
