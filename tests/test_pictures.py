"""Pictures a person can read: samples named by their file, labels by class name, no identical panels."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import Dataset, Subset, TensorDataset

from runner.checks import report_views
from runner.evaluation import reports


class Files(Dataset):
    """A dataset read from files, as torchvision's Flowers102 keeps them (`_image_files`, `classes`)."""

    classes = ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"]

    def __init__(self, n: int, folder: Path = Path("/data/flowers/jpg")):
        self._image_files = [folder / f"image_{i:05d}.jpg" for i in range(n)]
        self._labels = [i % 3 for i in range(n)]
        for i, path in enumerate(self._image_files if folder.is_dir() else []):
            Image.new("RGB", (6, 6), (40 * i, 100, 200 - 20 * i)).save(path)

    def __len__(self):
        return len(self._labels)

    def __getitem__(self, index):
        return torch.full((3, 6, 6), index / len(self)), self._labels[index]


def captured_figures(monkeypatch) -> list:
    figures = []
    monkeypatch.setattr(reports, "save_png", lambda figure, path: figures.append(figure))
    return figures


def test_samples_are_named_by_file_where_the_dataset_has_files():
    assert reports.sample_names(Subset(Files(6), [4, 1]), "val") == ["image_00004.jpg", "image_00001.jpg"]
    folder = Files(2)
    folder._image_files = [Path("/data/train/cat/001.jpg"), Path("/data/train/dog/001.jpg")]  # an image folder
    assert reports.sample_names(folder, "train") == ["cat/001.jpg", "dog/001.jpg"]
    assert reports.sample_names(TensorDataset(torch.zeros(3, 1), torch.zeros(3)), "val") == \
        ["val 0", "val 1", "val 2"]


def test_gallery_tiles_name_the_file_its_true_class_and_the_prediction(monkeypatch, tmp_path):
    figures = captured_figures(monkeypatch)
    dataset = Subset(Files(9), [8, 7, 6, 5, 4, 3])
    labels = torch.tensor([dataset[i][1] for i in range(6)])
    log_p = torch.log_softmax(torch.eye(3)[labels] * 4 - torch.eye(3)[[0] * 6] * 2, dim=1)
    names = reports.introspect.class_names(dataset, 3)
    reports.loss_galleries(-log_p.gather(1, labels[:, None]).squeeze(1), log_p.argmax(1), labels,
                           lambda i: dataset[i][0], names, [0.0] * 3, [1.0] * 3, tmp_path, per_gallery=3,
                           samples=reports.sample_names(dataset, "val"), split="val")
    highest = figures[-1]  # gallery_max
    titles = [axis.get_title() for axis in highest.axes]
    assert all(title.splitlines()[0].startswith("image_0000") for title in titles), titles
    assert any("true hard-leaved pocket" in title for title in titles)
    assert all("\npred " in title and "loss " in title for title in titles)
    assert "#" not in highest._suptitle.get_text() and "3 of 6 val samples" in highest._suptitle.get_text()


def views_setup(augment: str, folder: Path):
    cfg = OmegaConf.create({"dataset": {"augment": augment, "auto_augment": "none", "random_erasing": 0.0,
                                        "mean": [0.0] * 3, "std": [1.0] * 3, "channels": 3}})
    return SimpleNamespace(cfg=cfg, splits={"train": Files(8, folder)})


def test_views_without_augmentation_say_so_instead_of_three_identical_panels(tmp_path):
    names = Files.classes
    (figure, caption), = report_views.views_figure(views_setup("none", tmp_path), {"val": Files(4)}, names).values()
    titles = [axis.get_title() for axis in figure.axes if axis.get_title()]
    assert "no augmentation" in figure._suptitle.get_text() and "no augmentation" in caption
    assert not [t for t in titles if t == "training view (no augmentation)"]
    assert len(figure.axes) == 2 * 4 + 4  # four training images: as stored, as the model sees them; then val
    assert titles[0] == "train image_00000.jpg\npink primrose" and "val image_00003.jpg\npink primrose" in titles

    (figure, _), = report_views.views_figure(views_setup("basic", tmp_path), {"val": Files(4)}, names).values()
    assert sum(axis.get_title() == "augmented" for axis in figure.axes) == 3 * 4


def test_neighbours_name_both_files_and_their_classes(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    splits = {"train": Files(6, tmp_path / "train"), "val": Files(3, tmp_path / "val")}
    cfg = OmegaConf.create({"dataset": {"channels": 3}})
    figures, lines = report_views.neighbours_section(cfg, splits, Files.classes)
    (figure, _), = figures.values()
    titles = [axis.get_title() for axis in figure.axes if axis.get_title()]
    assert titles and all(t.startswith(("train image_0", "val image_0", "NEAR-DUPLICATE\ntrain image_0"))
                          for t in titles), titles
    assert any("(pink primrose)" in t for t in titles)
    assert not any("train 0 " in line or "/ val 0 " in line for line in lines)
