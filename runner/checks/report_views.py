"""The data report's views across samples (`python -m runner.inspect_data`): near-duplicate pairs by
nearest neighbours, training images beside their augmented views and beside validation and test
samples, and the images a resize to the configured size stretches."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from runner.checks.neighbours import NEAR, near_duplicates
from runner.checks.pictures import Figures, as_model_sees, as_stored, grid
from runner.data import datasets, introspect, transforms
from runner.evaluation.reports import sample_names, short


def unaugmented_splits(cfg) -> dict:
    """The splits as the evaluation sees them (a random crop or flip would hide a copy), files that do
    not decode left out (the report names them)."""
    off = {"augment": "none", "auto_augment": "none", "random_erasing": 0.0, "bad_images": "skip"}
    plain = {key: value for key, value in off.items() if key in cfg.dataset}
    return datasets.build_splits(OmegaConf.merge(cfg.dataset, plain))  # a user's own dataset has neither key


def neighbours_section(cfg, splits: dict, names: list[str]) -> tuple[Figures, list[str]]:
    """A figure of the closest pairs within train and between train and val/test (random-network
    features), and markdown listing every near-duplicate pair in either space."""
    findings = near_duplicates(splits, cfg.dataset.channels)
    samples = {split: sample_names(dataset, split) for split, dataset in splits.items()}
    images, titles = [], []
    for finding in (f for f in findings if f["space"] == "random features"):
        first, second = finding["splits"]
        for pair in finding["pairs"][:4]:
            images += [as_model_sees(splits[first][pair["a"]][0]), as_model_sees(splits[second][pair["b"]][0])]
            mark = "NEAR-DUPLICATE\n" if pair["near_duplicate"] else ""
            titles += [f"{mark}{first} {short(samples[first][pair['a']], 16)}\n({names[pair['labels'][0]][:16]})",
                       f"{second} {short(samples[second][pair['b']], 16)}\n({names[pair['labels'][1]][:16]})"
                       f"\nd={pair['distance']:.4f}"]
    lines = ["## nearest neighbours", "",
             f"Closest pairs among up to 1000 images a split; a near-duplicate is closer than {NEAR} x the "
             "median distance of a training image to its nearest neighbour (within train it counts one image "
             "twice; across splits it leaks the answer into the evaluation).", ""]
    for finding in findings:
        near = [p for p in finding["pairs"] if p["near_duplicate"]]
        first, second = finding["splits"]
        listed = ", ".join(f"{first} {samples[first][p['a']]} / {second} {samples[second][p['b']]} "
                           f"(d={p['distance']:.4f}, classes {names[p['labels'][0]]} / {names[p['labels'][1]]})"
                           for p in near)
        lines.append(f"- {finding['space']}, {first}-{second} (median nearest {finding['scale']:.4f}): "
                     f"{len(near)} near-duplicate pairs among the {len(finding['pairs'])} closest"
                     + (f": {listed}" if listed else ""))
    figure = grid(images, titles, 8, "closest pairs (random-network features): train-train, train-val, train-test")
    return {"neighbours": (figure, "each pair side by side, its distance under the second image")}, [*lines, ""]


def views_figure(setup, splits: dict, names: list[str]) -> Figures:
    """Four training images: as stored, then three draws of the training transform (augmentation; without
    any, one panel as the model sees it, and the title says so: three draws would be three copies); and
    rows of validation and test samples as the model sees them. Each sample under its file's name."""
    train = setup.splits["train"]
    mean, std = transforms.channel_stats(setup.cfg.dataset)
    dataset = setup.cfg.dataset
    augmented = (dataset.get("augment", "none") != "none" or dataset.get("auto_augment", "none") != "none"
                 or dataset.get("random_erasing", 0.0) > 0)
    draws, columns = (3, 4) if augmented else (1, 2)
    drawn = "augmented" if augmented else "as the model sees it"
    images, titles = [], []
    for split, data in (("train", train), ("val", splits.get("val")), ("test", splits.get("test"))):
        if data is None or not len(data):
            continue
        labels, samples = introspect.labels_of(data), sample_names(data, split)
        for index in range(0, len(data), max(1, len(data) // 4))[:4]:
            caption = f"{split} {short(samples[index], 18)}\n{names[int(labels[index])][:18]}"
            if split == "train":
                images += [as_stored(data, index, mean, std)] + [as_model_sees(data[index][0]) for _ in range(draws)]
                titles += [caption, *[drawn] * draws]
            else:
                images.append(as_model_sees(data[index][0]))
                titles.append(caption)
    title = ("training images and their augmented views; validation and test samples" if augmented else
             "no augmentation: each training image\nas stored and as the model sees it;\nvalidation and test samples")
    caption = ("rows 1-4: a training image as stored, then three draws of the training transform; last rows: "
               "val and test as the model sees them") if augmented else \
        ("no augmentation: a training image as stored beside the one view the model gets (every draw is the same); "
         "last rows: val and test as the model sees them")
    return {"views": (grid(images, titles, columns, title), caption)}


def stretched_note(cfg, records: list) -> list[str]:
    """Markdown: how many images a resize to dataset.image_size stretches (their shape differs from it)."""
    if not records:
        return []
    height, width = transforms.image_hw(cfg.dataset.image_size)
    target = width / height
    stretches = [(w / h) / target for _, (w, h), _ in records]
    off = [s for s in stretches if abs(s - 1) > 0.05]
    if not off:
        return []
    worst = max(off, key=lambda s: max(s, 1 / s))
    return ["## stretched images", "",
            f"{len(off)} of {len(records)} images are not {width}x{height} in shape: resizing to "
            f"dataset.image_size stretches them (the worst by {max(worst, 1 / worst):.2f}x along one side). The "
            "model sees them distorted; pictures in samples_model_view.png.", ""]


def highest_loss_section(setup, splits: dict, names: list[str], path: str) -> tuple[Figures, list[str]]:
    """The training samples a checkpoint's model finds hardest: where mislabelled images show up first."""
    import torch

    from runner.common import checkpoint_files
    from runner.evaluation.evaluator import model_of_checkpoint

    state = checkpoint_files.load(Path(path))
    model = model_of_checkpoint(state["config"], state, Path(path), torch.device("cpu"), list(setup.cfg.evaluate.trust))
    train = splits["train"]
    losses, predicted = [], []
    with torch.no_grad():
        for start in range(0, len(train), 256):
            x, y = zip(*(train[i] for i in range(start, min(start + 256, len(train)))), strict=True)
            logits = model(torch.stack(x))
            losses.append(setup.loss_per_sample(logits, torch.as_tensor(y)))
            predicted.append(logits.argmax(1))
    losses, predicted = torch.cat(losses), torch.cat(predicted)
    labels, samples = introspect.labels_of(train), sample_names(train, "train")
    worst = losses.argsort(descending=True)[:16].tolist()
    titles = [f"{short(samples[i], 18)}\ntrue {names[int(labels[i])][:16]}\npred {names[int(predicted[i])][:16]}\n"
              f"loss {float(losses[i]):.1f}" for i in worst]
    figure = grid([as_model_sees(train[i][0]) for i in worst], titles, 8, f"highest-loss training samples ({path})")
    lines = ["## highest-loss training samples", "", f"By {path}: " + ", ".join(
        f"{samples[i]} (label {names[int(labels[i])]}, predicted {names[int(predicted[i])]})" for i in worst) +
        ". Look for wrong labels among them.", ""]
    return {"highest_loss": (figure, "the training samples the checkpoint's model gets most wrong")}, lines
