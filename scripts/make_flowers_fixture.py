"""python scripts/make_flowers_fixture.py DIR [--per-class N] [--workers W]

Flowers-102 for trying runner without the download: DIR/flowers-102/ with the real label and split files
(imagelabels.mat, setid.mat, which the project ships in tests/fixtures/flowers102 and torchvision checks by
their md5 sums) beside 8189 generated JPEGs jpg/image_00001.jpg .. image_08189.jpg at Flowers-102's sizes
(the shorter side 500 pixels, the longer 500..700, a quarter of them portrait). Each class is a flower of its
own (petal count, shape and colour, centre colour), each image that flower at its own place, size, turn
and light over a blurred green ground: learnable, not trivially. The same files on every machine.

Then every flowers command of the README runs offline, for example:

    python scripts/make_flowers_fixture.py data            # about a minute of CPU (64 s measured), 170 MB
    python -m runner +experiment=flowers dataset.root=data trainer.epochs=2
    python -m runner.check +experiment=flowers dataset.root=data

--per-class N draws only the first N images of each class and makes the class's other files hard links to
them (seconds instead of a minute; the check of images in two splits then finds those copies).
"""

from __future__ import annotations

import argparse
import colorsys
import io
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from scipy.io import loadmat

LABEL_FILES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "flowers102"
SHORT_SIDE, LONGEST = 500, 700
DRAWN_AT = 3  # drawn at a third of the size, then resized: soft like a photograph, and quick


def rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value), dtype=np.float32)


def flower_of_class(label: int) -> dict:
    """What a class's flowers share: petals (count, width, colour), the centre's colour and size."""
    rng = np.random.default_rng([102, label])
    return {"petals": int(rng.integers(4, 10)), "sharpness": float(rng.uniform(0.4, 3.0)),
            "inner": float(rng.uniform(0.15, 0.5)), "petal": rgb(rng.uniform(0.42, 1.17), rng.uniform(0.45, 1), rng.uniform(0.7, 1)),  # no green
            "centre": rgb(rng.uniform(0.05, 0.18), rng.uniform(0.6, 1), rng.uniform(0.2, 0.9)),
            "centre_size": float(rng.uniform(0.12, 0.3))}


def image_size(rng: np.random.Generator) -> tuple[int, int]:
    """(height, width): the shorter side 500, the longer 500..700; a quarter portrait."""
    longer = int(rng.integers(SHORT_SIDE, LONGEST + 1))
    return (longer, SHORT_SIDE) if rng.uniform() < 0.25 else (SHORT_SIDE, longer)


def picture(image_id: int, label: int) -> Image.Image:
    """Image `image_id` of class `label` (0-based), the same on every machine."""
    rng = np.random.default_rng([image_id, 8189])
    flower = flower_of_class(label)
    height, width = image_size(rng)
    h, w = height // DRAWN_AT, width // DRAWN_AT
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    ground = rgb(rng.uniform(0.2, 0.38), rng.uniform(0.4, 0.8), rng.uniform(0.25, 0.6))
    blotches = np.asarray(Image.fromarray(rng.uniform(0, 255, (h // 12 + 2, w // 12 + 2)).astype(np.uint8))
                          .resize((w, h), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(4)),
                          dtype=np.float32) / 255  # leaves out of focus
    image = ground * (0.6 + 0.7 * blotches[..., None]) * (0.8 + 0.4 * (y / h))[..., None]
    radius = min(h, w) * rng.uniform(0.25, 0.42)
    cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
    r, theta = np.hypot(y - cy, x - cx), np.arctan2(y - cy, x - cx) + rng.uniform(0, 2 * np.pi)
    wave = np.abs(np.cos(flower["petals"] * theta / 2)) ** flower["sharpness"]
    edge = radius * (flower["inner"] + (1 - flower["inner"]) * wave)
    petal = np.clip((edge - r) / 2, 0, 1)[..., None]  # a soft edge of two (drawn) pixels
    shade = (0.75 + 0.25 * np.cos(2 * flower["petals"] * theta)) * (1 - 0.35 * r / radius)
    light = rng.uniform(0.8, 1.15)
    image = image * (1 - petal) + petal * flower["petal"] * np.clip(shade, 0.3, 1)[..., None] * light
    centre = np.clip((radius * flower["centre_size"] - r) / 2, 0, 1)[..., None]
    speckle = 0.85 + 0.3 * rng.uniform(size=(h, w, 1)).astype(np.float32)
    image = image * (1 - centre) + centre * flower["centre"] * speckle
    pixels = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    return Image.fromarray(pixels).resize((width, height), Image.Resampling.BICUBIC)


def jpeg_bytes(image_id: int, label: int) -> bytes:
    """The JPEG file of image `image_id` (1-based, as named) of class `label` (0-based)."""
    buffer = io.BytesIO()
    picture(image_id, label).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def make(root: Path, per_class: int | None, workers: int) -> tuple[int, int]:
    """root/flowers-102/{imagelabels.mat, setid.mat, jpg/}; returns (files written, images drawn)."""
    folder = root / "flowers-102"
    (folder / "jpg").mkdir(parents=True, exist_ok=True)
    for name in ("imagelabels.mat", "setid.mat"):
        shutil.copy(LABEL_FILES / name, folder / name)
    labels = [int(label) - 1 for label in loadmat(folder / "imagelabels.mat", squeeze_me=True)["labels"]]
    of_class: dict[int, list[int]] = {}
    for image_id, label in enumerate(labels, start=1):
        of_class.setdefault(label, []).append(image_id)
    drawn = sorted(i for ids in of_class.values() for i in (ids if per_class is None else ids[:per_class]))

    def write(image_id: int) -> None:
        path = folder / "jpg" / f"image_{image_id:05d}.jpg"
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(jpeg_bytes(image_id, labels[image_id - 1]))
        os.replace(temporary, path)  # a stopped script leaves no half-written image

    with ThreadPoolExecutor(workers) as pool:  # PIL resizes and encodes outside the GIL
        list(pool.map(write, drawn))
    if per_class is not None:
        for ids in of_class.values():
            for place, image_id in enumerate(ids[per_class:]):
                link(folder / "jpg" / f"image_{ids[place % per_class]:05d}.jpg",
                     folder / "jpg" / f"image_{image_id:05d}.jpg")
    return len(labels), len(drawn)


def link(source: Path, path: Path) -> None:
    """path as a hard link to source (a copy where the file system has no hard links)."""
    path.unlink(missing_ok=True)
    try:
        os.link(source, path)
    except OSError:
        shutil.copyfile(source, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], prog="scripts/make_flowers_fixture.py")
    parser.add_argument("root", type=Path, help="the dataset.root to use: DIR/flowers-102/ is written")
    parser.add_argument("--per-class", type=int, default=None, metavar="N",
                        help="draw N images of each class, the others hard links to them (default: draw all)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="threads drawing (default: the cores)")
    args = parser.parse_args(argv)
    if args.per_class is not None and args.per_class < 1:
        parser.error(f"--per-class {args.per_class}: draw 1 or more of each class (or leave it out: all)")
    start = time.perf_counter()
    files, drawn = make(args.root, args.per_class, max(1, args.workers))
    print(f"wrote {files} JPEGs ({drawn} drawn) and the label and split files into {args.root / 'flowers-102'} in "
          f"{time.perf_counter() - start:.0f} s. Try: python -m runner +experiment=flowers dataset.root={args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
