"""The checks that look at the data: `python -m runner.check checks=[data,splits,outliers]`.

data: the batch as the model sees it (shape, dtype, range, per-channel statistics, labels);
splits: label histograms, imbalance, a train/val label shift, images found in two splits;
outliers: the image files themselves (sizes, aspect ratios, grayscale, files that do not decode).
"""

from __future__ import annotations

from pathlib import Path

import torch

from runner.checks.setup import Result, Setup, counts_of, fmt
from runner.data import introspect, transforms
from runner.data.stored import content_hash, stored_reader


def check_data(setup: Setup) -> Result:
    """Data as the model sees it: shape, dtype, range, per-channel statistics, label range."""
    x, y = setup.batch()
    mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))
    low, high = float(x.min()), float(x.max())
    figure = (f"{tuple(x.shape[1:])} {str(x.dtype).removeprefix('torch.')}, range [{low:.2f}, {high:.2f}], "
              f"mean {fmt(mean)}, std {fmt(std)}, labels {int(y.min())}..{int(y.max())}")
    expected = f"({setup.cfg.dataset.channels}, H, W) float32, mean ~0, std ~1, labels 0..{setup.num_classes - 1}"
    details = {"mean": mean.tolist(), "std": std.tolist(), "min": low, "max": high}
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).any(dim=(1, 2, 3)).sum())
        return Result("data", figure, expected, "FAIL", f"{bad} of {len(x)} samples contain NaN or inf: fix the "
                      "data or the transform that produces them", details)
    if int(y.min()) < 0 or int(y.max()) >= setup.num_classes:
        return Result("data", figure, expected, "FAIL", f"labels must lie in 0..{setup.num_classes - 1}: check "
                      "dataset.num_classes and the label mapping", details)
    if x.shape[1] != setup.cfg.dataset.channels or x.dtype != torch.float32:
        return Result("data", figure, expected, "FAIL", "the transform must give float32 images with "
                      f"dataset.channels={setup.cfg.dataset.channels} channels", details)
    if (std < 0.5).any() and not (mean.abs() > 0.5).any():  # little left to learn from, or a wrong std
        return Result("data", figure, expected, "WARN", f"the inputs vary little after preprocessing (std {fmt(std)}): "
                      "before rescaling them, look at the model view (python -m runner.inspect_data: "
                      "samples_model_view.png): a transform may be destroying information (a wrong dataset.std, a "
                      "resize to a few pixels, a constant channel)", details)
    if (mean.abs() > 0.5).any() or ((std < 0.5) | (std > 2.0)).any():
        configured_mean, configured_std = transforms.channel_stats(setup.cfg.dataset)
        raw_mean = [m * s + c for m, s, c in zip(mean.tolist(), configured_std, configured_mean, strict=True)]
        return Result("data", figure, expected, "WARN", "inputs are not standardized: set dataset.mean and "
                      f"dataset.std to the training pixels' per-channel statistics (the mean is about {fmt(raw_mean)})",
                      details)
    return Result("data", figure, expected, "PASS", details=details)


def content_hashes(dataset) -> list[str]:
    """One hash per sample, of what is stored (a file's bytes, the pixels), never of a random augmented draw."""
    read = stored_reader(dataset)
    return [content_hash(read(index)) for index in range(len(dataset))]


# integer types labels are stored in by mistake: (values it holds, name, width); unsigned ones wrap
# a label of `size` or more to label - size, signed ones wrap the upper half to negative labels
UNSIGNED_CASTS = ((256, "uint8", "an 8-bit"), (65536, "uint16", "a 16-bit"))
SIGNED_CASTS = ((128, "int8", "an 8-bit"), (32768, "int16", "a 16-bit"), (2 ** 31, "int32", "a 32-bit"))


def wrapped_labels(counts: torch.Tensor, lowest: int = 0) -> str | None:
    """The finding when a split's label counts (per class, from 0) and its lowest label show labels
    wrapped by a narrow integer cast: negative labels (a signed type), or classes from 256 (65536)
    empty while as many classes from 0 hold twice the others' samples (uint8, uint16)."""
    classes = len(counts)
    if lowest < 0:
        size, name, width = next(cast for cast in SIGNED_CASTS if lowest >= -cast[0])
        empty = f" and classes {size}..{classes - 1} empty" if classes > size and not counts[size:].any() else ""
        return f"negative labels (down to {lowest}){empty}: labels wrapped by {width} cast ({name})"
    for size, name, width in UNSIGNED_CASTS:
        if classes <= size or counts[size:].any():
            continue
        doubled, others = counts[:classes - size].float(), counts[classes - size:size].float()
        if len(others) and not doubled.mean() > 1.5 * others.mean():  # classes merely missing, nothing doubled
            continue
        return (f"classes 0..{classes - size - 1} doubled and {size}..{classes - 1} empty: labels wrapped by "
                f"{width} cast ({name})")
    return None


def label_counts(setup: Setup, split: str) -> tuple[torch.Tensor, int]:
    """The split's samples per class (from 0) and its lowest label, which a signed cast makes negative."""
    labels = introspect.labels_of(setup.splits[split])
    return counts_of(labels, setup.num_classes), int(labels.min())


def check_splits(setup: Setup) -> Result:
    """Label histogram per split, labels wrapped by a cast, imbalance, train/val label shift, exact
    duplicates across splits."""
    from scipy.stats import chi2_contingency

    counts_and_lowest = {split: label_counts(setup, split) for split, ds in setup.splits.items() if len(ds)}
    counts = {split: found[0] for split, found in counts_and_lowest.items()}
    wrapped = next(filter(None, (wrapped_labels(*found) for found in counts_and_lowest.values())), None)
    train = counts["train"]
    present = train[train > 0]
    imbalance = float(present.max() / present.min())
    table = torch.stack([train, counts["val"]])
    table = table[:, table.sum(dim=0) > 0]
    p_value = float(chi2_contingency(table.numpy())[1]) if table.shape[1] > 1 else 1.0
    owners: dict[str, str] = {}
    shared = []
    for split, dataset in setup.splits.items():
        for index, digest in enumerate(content_hashes(dataset)):
            first = owners.setdefault(digest, f"{split}[{index}]")
            if not first.startswith(f"{split}["):
                shared.append((first, f"{split}[{index}]"))
    figure = (f"{', '.join(f'{s} {len(setup.splits[s])}' for s in counts)}; imbalance {imbalance:.1f}x; "
              f"train/val label shift p={p_value:.2g}; {len(shared)} images in two splits")
    details = {"histograms": {s: c.tolist() for s, c in counts.items()}, "imbalance": imbalance,
               "label_shift_p_value": p_value, "duplicates_across_splits": shared[:50]}
    expected = "no image in two splits, same label distribution in train and val (p > 0.001)"
    subset = setup.cfg.dataset.get("subset")
    of_what = f" in this dataset.subset={subset} miniature (not necessarily the data)" if subset else ""
    if wrapped:
        return Result("splits", figure, expected, "FAIL", f"{wrapped}. Fix: store and load the labels as int64 "
                      "(torch.long), never a narrower integer type", details)
    if shared:
        return Result("splits", figure, expected, "FAIL", f"remove the images found in two splits (e.g. "
                      f"{shared[0][0]} = {shared[0][1]}): validation leaks training data", details)
    if p_value < 1e-3:
        return Result("splits", figure, expected, "WARN", f"train and val label distributions differ{of_what}: split "
                      "with stratification, or know that validation measures a shifted distribution", details)
    if (train == 0).any():
        missing = (train == 0).nonzero().flatten().tolist()
        return Result("splits", figure, expected, "WARN",
                      f"classes {missing[:10]} have no training example{of_what}", details)
    return Result("splits", figure, expected, "PASS", details=details)


def scan_files(files: list[Path], channels: int) -> tuple[list, list[str], list[str]]:
    """Each file once: ([(path, (width, height), bytes)], undecodable names, grayscale names)."""
    from PIL import Image

    records, broken, gray = [], [], []
    for path in dict.fromkeys(files):
        try:
            with Image.open(path) as image:
                mode, size = image.mode, image.size
                if transforms.orientation(image) in transforms.SIDEWAYS:
                    size = size[::-1]  # (width, height) as a viewer shows it, and as the model gets it
                image.draft("RGB", (64, 64))  # decode at reduced scale: checks the stream, fast
                image.load()
        except Exception as error:
            broken.append(f"{path.name} ({type(error).__name__})")
            continue
        records.append((path, size, path.stat().st_size))
        if mode in ("L", "LA", "1", "I", "I;16", "F") and channels == 3:
            gray.append(path.name)
    return records, broken, gray


def check_outliers(setup: Setup) -> Result:
    """Image sizes, aspect ratios, file sizes (extremes named), grayscale among color, undecodable files."""
    files = [f for ds in setup.splits.values() for f in (introspect.image_files(ds) or [])]
    if not files:
        return Result("outliers", "in-memory tensors, all one shape", "files that decode, in color", "PASS")
    records, broken, gray = scan_files(files, setup.cfg.dataset.channels)

    def extreme(key, label):
        ordered = sorted(records, key=key)
        return f"{label} {ordered[0][0].name} .. {ordered[-1][0].name}" if ordered else ""
    aspect = [w / h for _, (w, h), _ in records]
    figure = (f"{len(records)} images, {min(w * h for _, (w, h), _ in records)}..{max(w * h for _, (w, h), _ in records)} pixels an image, "
              f"aspect {min(aspect):.2f}..{max(aspect):.2f}; {len(gray)} grayscale; {len(broken)} undecodable"
              if records else f"{len(broken)} undecodable")
    details = {"undecodable": broken, "grayscale": gray,
               "extremes": [extreme(lambda r: r[1][0] * r[1][1], "area"), extreme(lambda r: r[1][0] / r[1][1], "aspect"),
                            extreme(lambda r: r[2], "file size")]}
    expected = "every file decodes; color images in a color dataset"
    if broken:
        return Result("outliers", figure, expected, "FAIL", f"remove or replace the files that do not decode: "
                      f"{', '.join(broken[:5])}", details)
    if gray:
        return Result("outliers", figure, expected, "WARN", f"grayscale images in a color dataset ({', '.join(gray[:5])}): "
                      "they are converted to RGB; check they belong", details)
    return Result("outliers", figure, expected, "PASS", details=details)
