"""The image files a run reads, screened before the first step: `python -m runner dataset.bad_images=skip`.

`screen(cfg, splits)` opens every file of the file-backed splits (Flowers-102, ImageFolder) once,
before training. With `bad_images=raise` (the default) a file that is not an image stops the
run there, naming the file, instead of an hour in. With `bad_images=skip` every file is also
decoded (at reduced scale, which still reads the whole compressed stream, so a truncated JPEG
is found) and the files that fail are left out of their split: the same files in every run,
process and resume, because the choice depends on the files alone. Images converted on the
way (grayscale or CMYK to RGB, 16-bit scaled to 8 bits, turned upright by their EXIF orientation,
too small for the image size) are counted (32-bit float images, whose range nothing says, are refused
like files that do not decode), so the run can report them once instead of converting them silently.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from PIL import Image
from torch.utils.data import Dataset, Subset

from runner.common.errors import UserError
from runner.data.transforms import SIDEWAYS, image_hw, orientation

SCALED = "16-bit grayscale, scaled to 8 bits"
MODE_NAMES = {"L": "grayscale", "LA": "grayscale with alpha", "1": "black-and-white", "P": "palette",
              "CMYK": "CMYK", "RGBA": "RGBA", "I": "32-bit integer, read as 16-bit and scaled to 8 bits",
              "I;16": SCALED, "I;16L": SCALED, "I;16B": SCALED, "I;16N": SCALED, "F": "float"}
FLOAT_PIXELS = "32-bit float pixels (PIL mode F), of no known range"  # refused: nothing says what is white


@dataclass
class Screening:
    """What screening found in a run's image files."""

    skipped: list[tuple[Path, str]] = field(default_factory=list)
    """(file, why it does not decode), with bad_images=skip."""
    converted: Counter = field(default_factory=Counter)
    """PIL mode -> how many images were converted from it to the dataset's channels."""
    rotated: int = 0
    """Images stored turned or mirrored, turned upright by their EXIF orientation (as a viewer shows them)."""
    upscaled: int = 0
    """Images smaller than dataset.image_size in a side (resizing enlarges them)."""

    def summary(self) -> dict:
        """For run.json."""
        return {"skipped": len(self.skipped), "converted": dict(sorted(self.converted.items())),
                "rotated": self.rotated, "upscaled": self.upscaled}

    def describe(self) -> str | None:
        """One line for the log, or None when nothing was converted or skipped."""
        parts = [f"{n} {MODE_NAMES.get(mode, mode)} ({mode})" for mode, n in sorted(self.converted.items())]
        words = [f"converted {', '.join(parts)}"] if parts else []
        if self.rotated:
            words.append(f"{self.rotated} rotated upright by their EXIF orientation")
        if self.upscaled:
            words.append(f"{self.upscaled} smaller than the image size (enlarged)")
        if self.skipped:
            words.append(f"{len(self.skipped)} left out because they do not decode (dataset.bad_images=skip)")
        return "images: " + "; ".join(words) if words else None


def image_files(dataset: Dataset) -> list[Path] | None:
    """The image file of each sample for datasets read from files (Flowers102, ImageFolder), else None."""
    if isinstance(dataset, Subset):
        files = image_files(dataset.dataset)
        return None if files is None else [files[i] for i in dataset.indices]
    if hasattr(dataset, "_image_files"):
        return [Path(f) for f in dataset._image_files]
    if hasattr(dataset, "samples"):
        return [Path(path) for path, _ in dataset.samples]
    return None


class FileFacts(NamedTuple):
    problem: str | None
    """Why the file is unusable, or None."""
    mode: str
    """Its PIL mode."""
    size: tuple[int, int]
    """(width, height) upright, as a viewer shows it."""
    turned: bool
    """Its EXIF orientation turns or mirrors it."""


def read_file(path: Path, decode: bool) -> FileFacts:
    """What the file is, from its header (decode=True: also decoded, which finds a truncated file)."""
    try:
        with Image.open(path) as image:
            mode, (width, height) = image.mode, image.size
            turn = orientation(image, load=decode)
            if decode:
                image.draft("RGB", (1, 1))  # JPEG: decode at 1/8 scale, still reading every byte
                image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        return FileFacts(f"{type(error).__name__}: {error}", "", (0, 0), False)
    size = (height, width) if turn in SIDEWAYS else (width, height)
    return FileFacts(FLOAT_PIXELS if mode == "F" else None, mode, size, turn != 1)


def screen(cfg, splits: dict[str, Dataset], refuse_bad: bool = True) -> tuple[dict[str, Dataset], Screening]:
    """The splits without the files that cannot be used (skip), or an error naming the first (raise).

    refuse_bad=False keeps them, for the checks, whose job is to list every such file.
    """
    skip = cfg.get("bad_images", "raise") == "skip"
    files = {split: image_files(dataset) for split, dataset in splits.items()}
    unique = list(dict.fromkeys(f for split_files in files.values() if split_files for f in split_files))
    if not unique:
        return splits, Screening()
    with ThreadPoolExecutor() as pool:  # PIL decodes outside the GIL
        facts = dict(zip(unique, pool.map(lambda path: read_file(path, decode=skip), unique), strict=True))
    screening = count_conversions(cfg, facts)
    bad = {path: fact.problem for path, fact in facts.items() if fact.problem is not None}
    if not skip:
        if bad and refuse_bad:
            path, problem = next(iter(bad.items()))
            if problem == FLOAT_PIXELS:
                raise UserError(f"{path} has {problem}; {sum(p == problem for p in bad.values())} such file(s) in the "
                                "dataset. Fix: save it as an 8-bit or 16-bit image, or remove it, or set "
                                "dataset.bad_images=skip to leave such files out")
            raise UserError(f"{path} cannot be decoded as an image ({problem}); {len(bad)} such file(s) in the "
                            "dataset. Fix: replace or remove it, or set dataset.bad_images=skip to leave such files out")
        return splits, screening
    screening.skipped = sorted(bad.items())
    kept = {}
    for split, dataset in splits.items():
        split_files = files[split]
        if split_files is None or not any(f in bad for f in split_files):
            kept[split] = dataset
        else:
            kept[split] = Subset(dataset, [i for i, f in enumerate(split_files) if f not in bad])
    return kept, screening


def count_conversions(cfg, facts: dict[Path, FileFacts]) -> Screening:
    """How many usable images change mode, are turned upright or get enlarged on their way to the model."""
    expected = {"RGB"} if cfg.channels == 3 else {"L", "RGB"}  # color to gray is what channels=1 asks for
    height, width = image_hw(cfg.image_size)
    screening = Screening()
    for problem, mode, (w, h), turned in facts.values():
        if problem is None:
            screening.converted[mode] += mode not in expected
            screening.rotated += turned
            screening.upscaled += w < width or h < height
    screening.converted = +screening.converted  # drop the zero counts
    return screening
