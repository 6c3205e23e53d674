"""The dataset settings' schemas and rules: `python -m runner dataset=NAME dataset.subset=64 ...`.

Every dataset shares `DatasetSettings`; each option of conf/dataset/ extends it with its own
keys (conf/dataset/NAME.yaml names its schema first in its defaults list), so a key another
dataset has, or a typo, is refused when Hydra composes.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any  # noqa: UP035 (OmegaConf reads these annotations at run time)

from omegaconf import MISSING, DictConfig

from runner.common.rules import fail, int_at_least, one_of, positive_number, resumable
from runner.data import folders


@dataclass
class MixupSettings:
    alpha: float = 0.0
    """Mixup's Beta(alpha, alpha) (0: off; 0.2-0.8 are usual): each training micro-batch mixed with itself
    reversed, the loss given the mixed (soft) targets (runner/data/mixing.py)."""
    switch_prob: float = 0.5
    """With both dataset.mixup.alpha and dataset.cutmix.alpha set: the chance a micro-batch gets cutmix instead."""


@dataclass
class CutmixSettings:
    alpha: float = 0.0
    """CutMix's Beta(alpha, alpha) (0: off; 1.0 is usual): a box of the reversed micro-batch pasted in, the
    targets mixed by the box's area."""


@dataclass
class RandAugmentSettings:
    n: int = 2
    """Ops applied one after another to each image (dataset.auto_augment=rand)."""
    m: int = 9
    """Their magnitude: a bin of 31 (0..30), as torchvision's RandAugment(magnitude=m)."""


AUGMENTS = ("none", "basic")
AUTO_AUGMENTS = ("none", "trivial", "rand")


@dataclass
class DatasetSettings:
    name: str = MISSING
    """Which builder in runner/data/datasets.py makes the splits."""
    num_classes: int = MISSING
    """Classes of the task (the model's outputs)."""
    channels: int = 3
    """Image channels the model sees (1: grayscale)."""
    image_size: Any = field(default_factory=lambda: [128, 128])
    """One int (square) or [height, width]: what images are resized or cropped to."""
    mean: list[float] = field(default_factory=lambda: [0.5])
    """Per-channel mean to standardize with (one value: every channel)."""
    std: list[float] = field(default_factory=lambda: [0.5])
    """Per-channel standard deviation to standardize with."""
    normalize: str = "auto"
    """auto: a model that starts from pretrained weights gets data standardized with the weights' own mean/std,
    unless dataset.mean or dataset.std is set on the command line | weights: the weights' always |
    dataset: dataset.mean/std as configured (runner/data/standardization.py)."""
    root: str | None = resumable(None)
    """Where the data lives (or is downloaded to)."""
    download: bool = resumable(False)
    """Download the data into root when it is not there (needs internet)."""
    subset: int | None = None
    """N: a fixed, seeded miniature of N samples per split; null: everything."""
    augment: str = "none"
    """none | basic (random-resized-crop + horizontal flip, training only)."""
    auto_augment: str = "none"
    """none | trivial (TrivialAugment-wide: one op of 14 at a random magnitude) | rand (RandAugment:
    dataset.rand_augment.n ops at magnitude m), on each training image's uint8 pixels after the crop."""
    rand_augment: RandAugmentSettings = field(default_factory=RandAugmentSettings)
    """dataset.auto_augment=rand's n (ops) and m (magnitude bin, 0..30)."""
    random_erasing: float = 0.0
    """P: each training image has a random box (2-33% of it) set to 0 (the mean) with probability P."""
    mixup: MixupSettings = field(default_factory=MixupSettings)
    """Mixup of training micro-batches (alpha 0: off); the loss takes soft targets."""
    cutmix: CutmixSettings = field(default_factory=CutmixSettings)
    """CutMix of training micro-batches (alpha 0: off); the loss takes soft targets."""
    split_seed: int = 0
    """Seeds the split of data without an official one, and the subset choice."""
    folds: int | None = None
    """K: k-fold cross-validation, train and val pooled (the test split never joins) and dealt into K stratified
    folds; null: the dataset's own train/val split (runner/data/folds.py)."""
    fold: int | None = None
    """With dataset.folds=K: the fold (0..K-1) that validates, the other K-1 train; -m 'dataset.fold=range(K)'
    trains one run per fold."""
    fold_seed: int = 0
    """Seeds the deal into folds (not trainer.seed: every run of a seed group sees the same folds)."""


@dataclass
class DigitsSettings(DatasetSettings):
    val_fraction: float = 0.2
    """Share of the 1797 images for validation."""
    test_fraction: float = 0.2
    """Share of the 1797 images for testing."""


@dataclass
class SyntheticSettings(DatasetSettings):
    train_size: int = 512
    """Generated training samples."""
    val_size: int = 128
    """Generated validation samples."""
    test_size: int = 128
    """Generated test samples."""
    noise: float = 1.0
    """Standard deviation of the noise around each class prototype."""


@dataclass
class Cifar10Settings(DatasetSettings):
    val_size: int = 5000
    """Official training images held out (seeded) for validation."""
    cache: str = resumable("none")
    """none: the uint8 images (in memory already) go through the loader | device: each split's images
    copied to the GPU once, micro-batches gathered and augmented there (no loader workers)."""


@dataclass
class ImageFileSettings(DatasetSettings):
    cache: str = resumable("none")
    """none | disk: decode and resize each image once into a uint8 array in ~/.cache/runner
    ($RUNNER_CACHE), mapped into memory by later runs | memory: the same, read into RAM | device: each
    split's pixels copied to the GPU once, micro-batches gathered and augmented there (no loader workers)."""
    bad_images: str = "raise"
    """raise: a file that is not an image stops the run at start, named | skip: files that do not
    decode are left out of their split (listed in the run's skipped_images.txt)."""


@dataclass
class ImageFolderSettings(ImageFileSettings):
    val_fraction: float = 0.2
    """Without root/train and root/val: share of the images for validation."""
    test_fraction: float = 0.0
    """Without root/train and root/val: share of the images for testing."""


def class_folders(root) -> int:
    """`${class_folders:${dataset.root}}`: imagefolder's classes, one per subfolder (of root/train
    when root holds train/ and val/), as torchvision's ImageFolder finds them; 0 without a folder."""
    folder = Path(str(root))
    if (folder / "train").is_dir() and (folder / "val").is_dir():
        folder = folder / "train"
    return sum(1 for entry in folder.iterdir() if entry.is_dir()) if folder.is_dir() else 0


SCHEMAS = {"digits": DigitsSettings, "synthetic": SyntheticSettings, "flowers102": ImageFileSettings,
           "cifar10": Cifar10Settings, "imagefolder": ImageFolderSettings}
# the builders' names (data/datasets.py's DATASETS, in its order): here, so that the check of the command line,
# which runs before the first log line, does not import datasets.py and with it torch (seconds)
DATASET_NAMES = (*SCHEMAS, "custom")


def validate(dataset: DictConfig) -> None:
    if dataset.name not in DATASET_NAMES:
        fail("dataset.name", dataset.name, "is not a known dataset", f"one of {', '.join(DATASET_NAMES)}")
    if dataset.name == "imagefolder" and not Path(str(dataset.root)).is_dir():  # before the classes it holds
        fail("dataset.root", dataset.root, "has no value" if dataset.root is None else "is not a folder",
             "dataset.root=/path/to/images (class subfolders, or train/ and val/ with class subfolders)")
    if dataset.name == "imagefolder":
        folders.refuse_half_split(Path(str(dataset.root)))
        if not (isinstance(dataset.num_classes, int) and dataset.num_classes >= 2):
            folders.refuse_wrong_level(Path(str(dataset.root)))  # the classes counted from the folders are too few: why
    int_at_least("dataset.num_classes", dataset.num_classes, 2, "dataset.num_classes=10")
    int_at_least("dataset.channels", dataset.channels, 1, "dataset.channels=3")
    size = dataset.image_size
    sizes = [size] if isinstance(size, int) else list(size)
    if len(sizes) not in (1, 2) or not all(isinstance(s, int) and s > 0 for s in sizes):
        fail("dataset.image_size", size, "must be an int or [height, width]", "dataset.image_size=[128,128]")
    for key in ("mean", "std"):
        values = list(dataset[key])
        if len(values) not in (1, dataset.channels):
            fail(f"dataset.{key}", values, f"needs 1 or {dataset.channels} values (dataset.channels)",
                 f"dataset.{key}=[{', '.join(['0.5'] * dataset.channels)}]")
    if any(s <= 0 for s in dataset.std):
        fail("dataset.std", list(dataset.std), "must be positive", "use the per-channel standard deviation of the pixels")
    if "normalize" in dataset:  # a checkpoint written before the setting has none
        one_of("dataset.normalize", dataset.normalize, ("auto", "weights", "dataset"))
    if dataset.subset is not None and (not isinstance(dataset.subset, int) or dataset.subset < 1):
        fail("dataset.subset", dataset.subset, "must be a positive integer", "dataset.subset=64, or null for all")
    known_name("dataset.augment", dataset.augment, AUGMENTS)
    validate_folds(dataset)
    validate_augmentation(dataset)
    if "cache" in dataset:  # CIFAR-10's images are in memory already: none or device
        choices = ("none", "device") if dataset.name == "cifar10" else ("none", "disk", "memory", "device")
        one_of("dataset.cache", dataset.cache, choices)
    if "bad_images" in dataset:
        one_of("dataset.bad_images", dataset.bad_images, ("raise", "skip"))


def validate_folds(dataset: DictConfig) -> None:
    """dataset.folds and dataset.fold go together, the fold one of the folds (a class too small for the folds is
    found where the data is read: data/folds.py)."""
    folds, fold = dataset.get("folds"), dataset.get("fold")
    if folds is None and fold is None:
        return
    if folds is None:
        fail("dataset.fold", fold, "needs dataset.folds (how many folds train+val is dealt into)",
             f"dataset.folds=5 dataset.fold={fold}, or dataset.fold=null for the dataset's own split")
    int_at_least("dataset.folds", folds, 2, "dataset.folds=5 (2 or more), or dataset.folds=null for the dataset's "
                 "own split")
    if fold is None:
        fail("dataset.folds", folds, "needs dataset.fold (which fold validates)",
             f"dataset.fold=0 (0..{folds - 1}), or -m 'dataset.fold=range({folds})' for one run per fold")
    if not isinstance(fold, int) or isinstance(fold, bool) or not 0 <= fold < folds:
        fail("dataset.fold", fold, f"is not a fold of dataset.folds={folds}", f"dataset.fold=0..{folds - 1}, "
             f"or -m 'dataset.fold=range({folds})' for one run per fold")
    int_at_least("dataset.fold_seed", dataset.get("fold_seed", 0), 0, "dataset.fold_seed=0")


def known_name(key: str, value, choices: tuple[str, ...]) -> None:
    """One of `choices`, or one line naming the closest one."""
    if value in choices:
        return
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
    hint = f"did you mean {key}={close[0]}? " if close else ""
    fail(key, value, "is not known", f"{hint}{key}={'|'.join(choices)} (one of them)")


def validate_augmentation(dataset: DictConfig) -> None:
    """The training augmentation beside dataset.augment (absent from a checkpoint written before them)."""
    if "auto_augment" not in dataset:
        return
    known_name("dataset.auto_augment", dataset.auto_augment, AUTO_AUGMENTS)
    int_at_least("dataset.rand_augment.n", dataset.rand_augment.n, 1, "dataset.rand_augment.n=2")
    m = dataset.rand_augment.m
    if not isinstance(m, int) or isinstance(m, bool) or not 0 <= m <= 30:
        fail("dataset.rand_augment.m", m, "must be a magnitude bin 0..30", "dataset.rand_augment.m=9")
    if dataset.auto_augment != "rand":  # n and m mean nothing to trivial or none: a setting that would be ignored
        for key, default in (("n", 2), ("m", 9)):
            if dataset.rand_augment[key] != default:
                fail(f"dataset.rand_augment.{key}", dataset.rand_augment[key],
                     f"is used only with dataset.auto_augment=rand (it is {dataset.auto_augment})",
                     f"dataset.auto_augment=rand, or drop dataset.rand_augment.{key}")
    if dataset.auto_augment != "none" and dataset.name == "synthetic":
        fail("dataset.auto_augment", dataset.auto_augment, "works on pixels, and synthetic's values are not pixels "
             "(Gaussian noise around class means: the ops would clip them to [0, 1] in training only)",
             "dataset.auto_augment=none, or digits / an image folder")
    for key, value in (("random_erasing", dataset.random_erasing), ("mixup.switch_prob", dataset.mixup.switch_prob)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
            fail(f"dataset.{key}", value, "must be a probability in [0, 1]", f"dataset.{key}=0.25")
    for key in ("mixup", "cutmix"):
        positive_number(f"dataset.{key}.alpha", dataset[key].alpha, f"dataset.{key}.alpha=0.2 (0: off)", allow_zero=True)


def refuse_micro_batches_of_one(dataset: DictConfig, micro_batch_size: int) -> None:
    """mixup/cutmix mix a micro-batch with itself reversed (data/mixing.py): one image would be mixed with itself."""
    mixing = any((dataset.get(key) or {}).get("alpha", 0) for key in ("mixup", "cutmix"))
    if mixing and micro_batch_size < 2:
        fail("trainer.micro_batch_size", micro_batch_size, "leaves mixup/cutmix nothing to mix (each micro-batch is "
             "mixed with itself reversed: one image with itself)", "trainer.micro_batch_size=2 or more, or "
             "dataset.mixup.alpha=0 dataset.cutmix.alpha=0")
