"""The check that the training augmentation keeps what the images are: `python -m runner.check checks=[augmentation_consistency]`.

A mirrored digit is another digit: an augmentation that changes the label trains silently on
wrong labels, and every other check passes. The evidence: a quick model trained on clean
(unaugmented) images scores far lower on augmented views of held-out images than on the same
images clean. Each flip the augmentation makes is measured on its own (the exact op, so the fix
can name it), then the augmentation as training applies it (each sample's ops under its own
seed, as the loader draws them). A drop counts when it is beyond chance (a paired sign test on
the same images, p < 0.001) and large: the view keeps less than LARGE of the accuracy the model
has above chance (FAIL for a flip, which changes the label; WARN for the rest, such as a crop,
which may only be harder).

The evaluation's mirror (evaluate.tta=flip or flip+translate) is measured the same way, on the
training images as they are, where the training does not augment: a mirrored digit averaged into
the prediction is as wrong at test time.

Where runner augments (dataset.augment=basic, dataset.auto_augment, dataset.random_erasing), the clean
images are the same training images built without augmentation; where the training split of a user's own data augments itself
(dataset=custom), the clean images are the validation split's, and the training split's draws
are compared with them unpaired (at most a WARN: the two splits may differ for other reasons).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import OmegaConf

from runner.checks.setup import Result, Setup, class_counts, fresh
from runner.checks.training import train_steps
from runner.data import datasets, introspect
from runner.data.batch_augment import SCALE
from runner.data.loaders import SeededSamples
from runner.evaluation.paired import fair_coin_lower_tail, two_proportion_p_value

LARGE, NOTABLE = 0.6, 0.8  # share of the above-chance accuracy a view keeps: below LARGE fails a flip, below NOTABLE warns
SIGNIFICANT = 1e-3
FLIPS = {-1: "mirrors images (left-right)", -2: "flips images upside down"}
EXPECTED = "augmented views score as the clean images do"


@dataclass
class View:
    """A view of the held-out images and how the quick model scores on it against the clean images."""

    name: str
    right: torch.Tensor  # per image: 1.0 where the model is right
    p_value: float
    kept: float  # share of the clean accuracy above chance that remains

    def drops(self, limit: float) -> bool:
        return self.p_value < SIGNIFICANT and self.kept < limit


def sample_seed(seed: int, index: int) -> int:
    """Each sample's own seed of a draw, as the loader gives every sample its own."""
    return seed * 1_000_003 + index


def drawn(dataset, index: int, seed: int):
    """dataset[index] with torch's generator seeded for this sample, as the loader seeds it."""
    return SeededSamples(dataset)[(index, sample_seed(seed, index))]


def stacked(dataset, indices: list[int], seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples as a batch; with a seed, each drawn under its own seed as training draws it."""
    items = [dataset[i] if seed is None else drawn(dataset, i, seed) for i in indices]
    return torch.stack([x for x, _ in items]), torch.as_tensor([int(y) for _, y in items])


def draws(dataset, index: int, count: int = 6) -> list[torch.Tensor]:
    return [drawn(dataset, index, seed)[0] for seed in range(count)]


def augments(dataset, indices: list[int]) -> bool:
    """Whether reading the same samples under other seeds gives other images (a random transform)."""
    return any(any(not torch.equal(views[0], other) for other in views[1:])
               for views in (draws(dataset, i, 4) for i in indices))


def flips_drawn(dataset, indices: list[int]) -> list[int]:
    """The axes along which some draw of a sample is another draw flipped: flips the transform makes."""
    found = []
    for axis in FLIPS:
        for views in (draws(dataset, i) for i in indices):
            if any(not torch.equal(a, b) and torch.allclose(a, b.flip(axis)) for a in views for b in views):
                found.append(axis)
                break
    return found


def sign_test(clean: torch.Tensor, view: torch.Tensor) -> float:
    """One-sided p-value that the view is right less often than the clean image, on the same images
    (exact binomial on the images only one of the two gets right)."""
    lost, gained = int((clean > view).sum()), int((view > clean).sum())
    return fair_coin_lower_tail(gained, lost + gained)  # P(at least `lost` of them lost) = P(at most `gained` gained)


def two_proportion_test(clean: torch.Tensor, view: torch.Tensor) -> float:
    """One-sided p-value that the view's accuracy is below the clean one, on different images."""
    return two_proportion_p_value(float(clean.mean()), float(view.mean()), len(clean), len(view))


def quick_model(setup: Setup, x: torch.Tensor, y: torch.Tensor):
    """The configured model after checks.augmentation_steps updates on the clean images (x, y), taken in
    batches of checks.baseline_batch_size."""
    size = setup.cfg.checks.baseline_batch_size
    batches = [(bx.to(setup.device), by.to(setup.device)) for bx, by in zip(x.split(size), y.split(size), strict=True)]
    model = fresh(setup)
    train_steps(setup, model, batches, setup.cfg.checks.augmentation_steps)
    return model.eval()


@dataclass
class Source:
    """Where the clean images and their augmented views come from."""

    clean: object  # a dataset of clean images: the training split built without augmentation, or validation
    pool: list[int]  # its samples of the most frequent classes
    paired: bool  # the training split's sample i is a view of clean sample i
    owner: str  # what augments, as the fix names it
    flips: list[int]  # the axes measured: those the augmentation flips, and the evaluation's mirror (-1)
    tta: str = ""  # "evaluate.tta=flip" where the evaluation mirrors too; "" where it does not
    trained_flips: list[int] | None = None  # the axes training flips (None: all of `flips`)


RUNNERS_OWN = {"augment": "none", "auto_augment": "none", "random_erasing": 0.0}  # runner's augmentation, off


def runners_augmentation(cfg) -> str:
    """The settings of runner's own augmentation that are on: 'dataset.augment=basic dataset.auto_augment=trivial'."""
    on = [f"dataset.{key}={cfg[key]}" for key, off in RUNNERS_OWN.items() if key in cfg and cfg[key] != off]
    return " ".join(on) or "dataset.augment=none"


def mirrors_at_test_time(setup: Setup) -> bool:
    """evaluate.tta=flip (or flip+translate): the evaluation averages each image with its mirror."""
    return "flip" in str(setup.cfg.get("evaluate", {}).get("tta", "none"))


def clean_source(setup: Setup, classes: list[int], probe: list[int]) -> Source:
    """runner's own augmentation (the training split built without dataset.augment/auto_augment/random_erasing
    reads the same every time): paired with that split; else the training split augments itself: the
    validation split."""
    cfg = setup.cfg.dataset
    plain = OmegaConf.merge(cfg, {key: off for key, off in RUNNERS_OWN.items() if key in cfg})
    splits, _ = datasets.build_screened_splits(plain, refuse_bad=False)  # indices as the checks' splits have them
    if not augments(splits["train"], probe):
        flips = [-1] if cfg.get("augment") == "basic" else []  # basic: crop + flip; the auto-augment ops never flip
        clean, paired, owner = splits["train"], True, runners_augmentation(cfg)
    else:
        target = f" of dataset._target_={cfg._target_}" if "_target_" in cfg else ""
        clean, paired, owner = splits["val"], False, f"the training split's own transform{target}"
        flips = flips_drawn(setup.splits["train"], probe)
    labels = introspect.labels_of(clean)
    return Source(clean, torch.isin(labels, torch.tensor(classes)).nonzero().flatten().tolist(), paired, owner, flips)


def held_out(pool: list[int], settings) -> tuple[list[int], list[int]]:
    """(images the quick model trains on, images it is measured on): seeded, disjoint."""
    order = [pool[i] for i in torch.randperm(len(pool), generator=torch.Generator().manual_seed(0)).tolist()]
    measured = min(settings.augmentation_samples, len(order) // 3)
    return order[measured:][: 16 * settings.baseline_batch_size], order[:measured]


def compared(name: str, clean: torch.Tensor, view: torch.Tensor, chance: float, paired: bool) -> View:
    above = float(clean.mean()) - chance
    kept = max(0.0, (float(view.mean()) - chance) / above) if above > 0 else 1.0  # below chance: nothing kept
    return View(name, view, (sign_test if paired else two_proportion_test)(clean, view), kept)


def scored_views(setup: Setup, source: Source, model, measured: list[int], classes: list[int]):
    """(per image right on the clean images, chance accuracy, the views: each flip, then training's augmentation)."""
    x, y = stacked(source.clean, measured)

    def right(images: torch.Tensor, labels: torch.Tensor = y) -> torch.Tensor:
        with torch.no_grad():
            return (model(images.to(setup.device)).argmax(1).cpu() == labels).float()

    clean = right(x)
    chance = float(torch.bincount(y).max()) / len(y)  # always answering the commonest class
    views = [compared(FLIPS[axis], clean, right(x.flip(axis)), chance, True) for axis in source.flips]
    train = setup.splits["train"]
    if source.paired:  # the same images as training draws them
        views.append(compared("as training augments", clean, right(stacked(train, measured, seed=0)[0]), chance, True))
    else:  # training images of the same classes, as training draws them
        labels = introspect.labels_of(train)
        drawn_from = torch.isin(labels, torch.tensor(classes)).nonzero().flatten()[: len(measured)].tolist()
        augmented, augmented_labels = stacked(train, drawn_from, seed=0)
        views.append(compared("as training augments", clean, right(augmented, augmented_labels), chance, False))
    return clean, chance, views


TTA_CURE = "use evaluate.tta=none (or translate, which does not mirror)"


def flip_fix(source: Source, view: View) -> str:
    axis = next(axis for axis, name in FLIPS.items() if name == view.name)
    if axis not in (source.flips if source.trained_flips is None else source.trained_flips):  # the evaluation's
        owner, cure = source.tta, TTA_CURE
    else:
        owner = source.owner
        cure = ("use dataset.augment=none (basic always flips), or your own augmentation without the flip "
                "(dataset=custom)" if source.paired else "remove the flip from your training transform")
        if source.tta and axis == -1:
            cure += f"; {source.tta} mirrors them at test time too: {TTA_CURE}"
    return (f"{owner} {view.name}, and this dataset's classes change under it (as a mirrored digit is another "
            f"digit): a quick model keeps {view.kept:.0%} of its accuracy above chance on such images; {cure}")


def augmentation_fix(source: Source, view: View) -> str:
    if source.paired:
        return (f"{source.owner} changes what the images are beyond its flip: its random-resized-crop keeps as little as "
                f"{SCALE[0]:.0%} of an image (the quick model keeps {view.kept:.0%} of its accuracy above chance on the views): use "
                "dataset.augment=none, or a milder augmentation of your own (dataset=custom), or a larger image size")
    return (f"{source.owner} changes what the images are: a model trained on clean validation images keeps "
            f"{view.kept:.0%} of its accuracy above chance on the training split's draws: check that each of its "
            "random ops keeps the class")


def verdict(source: Source, views: list[View]) -> tuple[str, str]:
    """FAIL for a flip that changes the class; WARN for a notable drop of a flip or of the whole augmentation."""
    *flips, whole = views
    failing = [v for v in flips if v.drops(LARGE)]
    if failing:
        return "FAIL", flip_fix(source, failing[0])
    notable = [v for v in flips if v.drops(NOTABLE)]
    if notable:
        return "WARN", flip_fix(source, notable[0])
    if whole.drops(NOTABLE):
        return "WARN", augmentation_fix(source, whole)
    return "PASS", ""


def check_augmentation_consistency(setup: Setup) -> Result:
    """A quick model trained on clean images scores about as well on augmented views of held-out images."""
    settings = setup.cfg.checks
    train = setup.splits["train"]
    classes = class_counts(setup).argsort(descending=True)[: settings.baseline_classes].tolist()
    probe = torch.isin(introspect.labels_of(train), torch.tensor(classes)).nonzero().flatten()[:8].tolist()
    if not augments(train, probe) and not mirrors_at_test_time(setup):
        return Result("augmentation_consistency", "no augmentation (each training image reads the same every time)",
                      EXPECTED, "PASS", details={"augments": False})
    tta = f"evaluate.tta={setup.cfg.evaluate.tta}" if mirrors_at_test_time(setup) else ""
    if augments(train, probe):
        source = clean_source(setup, classes, probe)
    else:  # only the evaluation mirrors: measure the mirror on the training images as they are
        labels = introspect.labels_of(train)
        source = Source(train, torch.isin(labels, torch.tensor(classes)).nonzero().flatten().tolist(), True, tta, [])
    source.tta, source.trained_flips = tta, list(source.flips)
    if tta and -1 not in source.flips:
        source.flips.append(-1)
    trained_on, measured = held_out(source.pool, settings)
    if len(measured) < 20:  # a sign test on fewer images cannot reach p < 0.001 for a moderate drop
        return Result("augmentation_consistency", f"{len(source.pool)} clean images of the commonest classes: too few "
                      "to hold out 20", EXPECTED, "WARN", "too few images to judge the augmentation: look at the "
                      "augmented views in python -m runner.inspect_data", {"augments": True})
    model = quick_model(setup, *stacked(source.clean, trained_on))
    clean, chance, views = scored_views(setup, source, model, measured, classes)
    figure = (f"quick model on {len(measured)} held-out clean images {100 * float(clean.mean()):.1f}% (chance "
              f"{100 * chance:.0f}%); " + ", ".join(f"{v.name}: {100 * float(v.right.mean()):.1f}% (keeps "
                                                     f"{v.kept:.0%}, p={v.p_value:.1g})" for v in views))
    details = {"augments": True, "owner": source.owner, "clean_accuracy": float(clean.mean()), "chance": chance,
               "views": {v.name: {"accuracy": float(v.right.mean()), "kept": v.kept, "p_value": v.p_value}
                         for v in views},
               "flips_change_class": [v.name for v in views[:-1] if v.drops(LARGE)]}
    if float(clean.mean()) - chance < 0.1:
        return Result("augmentation_consistency", figure, EXPECTED, "WARN",
                      "the quick model learned too little on clean images to judge the augmentation: raise "
                      "checks.augmentation_steps (and see input_independent)", details)
    return Result("augmentation_consistency", figure, EXPECTED, *verdict(source, views), details)
