"""The layout of an image folder, `python -m runner dataset=imagefolder dataset.root=FOLDER`: the rules that
refuse a root at the wrong level, half a split, class folders that differ between splits, an empty class folder.

Used by the settings' validation (before the classes are counted) and by the builder (the evaluator builds
from a saved config, without validation).
"""

from __future__ import annotations

import os
from pathlib import Path

from runner.common.errors import UserError


def class_folder_names(folder: Path) -> list[str]:
    """The class folders of an ImageFolder, in label order: its subfolders, sorted (torchvision's find_classes)."""
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())


def listed(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def refuse_other_classes(train: Path, other: Path) -> None:
    """Classes are matched between splits by folder name: val/ (test/) must have exactly train/'s class folders.

    (ImageFolder numbers each split's folders on its own: val apple/cherry/durian would be labelled 0/1/2
    like train's apple/banana/cherry, and cherry would be scored as banana without a word.)"""
    ours, theirs = class_folder_names(train), class_folder_names(other)
    missing, extra = [c for c in ours if c not in theirs], [c for c in theirs if c not in ours]
    if not missing and not extra:
        return
    said, fixes = [], []
    if missing:
        said.append(f"lacks class folder {listed(missing)} that {train} has")
        fixes.append(f"add {other / missing[0]} with images of that class (or remove {train / missing[0]})"
                     + (", and likewise the others" if len(missing) > 1 else ""))
    if extra:
        said.append(f"has {listed(extra)} that {train} lacks" if missing
                    else f"has class folder {listed(extra)} that {train} lacks")
        fixes.append(f"remove {other / extra[0]} (or add {train / extra[0]} with training images)"
                     + (", and likewise the others" if len(extra) > 1 else ""))
    raise UserError(f"{other} {', and '.join(said)} (classes are matched between splits by folder name). "
                    f"Fix: {'; '.join(fixes)}")


def refuse_empty_class_folders(folder: Path) -> None:
    """A class folder without an image file, named with what it holds (torchvision's own error blames the root)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    if not folder.is_dir():
        return
    for name in class_folder_names(folder):
        found = [f for _, _, files in os.walk(folder / name, followlinks=True) for f in files]
        if not any(f.lower().endswith(IMG_EXTENSIONS) for f in found):
            holds = f"{len(found)} file{'s' if len(found) != 1 else ''}, none" if found else "it is empty, files"
            raise UserError(f"class folder {folder / name} holds no image file ({holds} ending in "
                            f"{', '.join(IMG_EXTENSIONS)}). Fix: put the images of class {name} into it, or remove "
                            f"the folder (each subfolder of {folder} is a class)")


SPLIT_FOLDERS = ("train", "val", "test")
IMAGE_ENDINGS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's


def refuse_half_split(root: Path) -> list[str]:
    """The split folders of an imagefolder root (train, val, test), refused when train or val is missing: the
    others would be taken for classes ("train" vs "test")."""
    splits = [name for name in SPLIT_FOLDERS if name in class_folder_names(root)]
    if splits and not {"train", "val"} <= set(splits):
        missing = [name for name in ("train", "val") if name not in splits]
        raise UserError(f"dataset.root={str(root)!r} has {' and '.join(splits)} but no {' and '.join(missing)}: with "
                        "split folders root/train and root/val are the splits (root/test too, if there), without them "
                        f"every subfolder is a class. Fix: add {root / missing[0]} with the class folders of "
                        f"{splits[0]}, or put the class folders directly into dataset.root for a seeded split")
    return splits


def refuse_wrong_level(root: Path) -> None:
    """dataset=imagefolder: a root whose subfolders cannot be the classes (one class's folder, a folder holding one
    folder, train/ without val/) is refused naming the folder that fits, before num_classes is counted from it."""
    splits = refuse_half_split(root)
    classes_root = root / "train" if splits else root
    where = str(classes_root) if splits else f"dataset.root={str(root)!r}"
    folders = class_folder_names(classes_root)
    if not folders:
        images = sum(1 for f in classes_root.iterdir() if f.is_file() and f.name.lower().endswith(IMAGE_ENDINGS))
        if images and classes_root == root:
            raise UserError(f"{where} holds {images} image files but no class folder: it looks like the folder of one "
                            f"class. Fix: dataset.root={root.parent} (the folder whose subfolders are the classes)")
        holds = f"{images} image files but no class folder" if images else "no class folder and no image"
        raise UserError(f"{where} holds {holds}. Fix: put the images of each class into a subfolder of "
                        f"{classes_root} named after the class (CLASS/image.jpg)")
    if len(folders) == 1:
        inner = classes_root / folders[0]
        if len(class_folder_names(inner)) >= 2 and classes_root == root:
            raise UserError(f"{where} holds one class folder ({folders[0]}), which holds folders itself: the classes? "
                            f"Fix: dataset.root={inner}")
        raise UserError(f"{where} holds one class folder ({folders[0]}): a classifier needs two or more. Fix: add a "
                        f"folder of images for each other class to {classes_root}")
