"""Pictures of samples for the data report (`python -m runner.inspect_data`): an image as stored, as
the model sees it, and a titled grid of them."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from runner.data import transforms  # noqa: E402
from runner.data.stored import stored_item  # noqa: E402

Figures = dict[str, tuple[plt.Figure, str]]  # name -> (figure, caption)


def as_model_sees(x: torch.Tensor):
    """A standardized image on a fixed scale: -3..3 std maps to black..white (bad scaling shows)."""
    image = ((x.float().clamp(-3, 3) + 3) / 6).permute(1, 2, 0).numpy()
    return image[..., 0] if image.shape[2] == 1 else image


def as_stored(dataset, index: int, mean, std):
    """The sample before preprocessing and augmentation: the file itself, a uint8 array's pixels, the
    user's PIL image, or the de-normalized tensor (the same picture on every call)."""
    item = stored_item(dataset, index)
    if isinstance(item, Image.Image):  # upright, 8-bit, as a viewer shows it
        return transforms.as_rgb(item, f"the training split's image {index}")
    if isinstance(item, np.ndarray):  # uint8 pixels
        image = item / 255
    elif isinstance(item, torch.Tensor):
        image = transforms.denormalize(item, mean, std).permute(1, 2, 0).numpy()
    else:  # read as the loader reads it: upright, 16-bit scaled
        return transforms.load_image(item)
    return image[..., 0] if image.shape[2] == 1 else image


def grid(images: list, titles: list[str], columns: int, title: str):
    rows = max(1, -(-len(images) // columns))
    lines = max((caption.count("\n") + 1 for caption in titles), default=1)  # taller rows for longer captions
    figure, axes = plt.subplots(rows, columns, figsize=(1.8 * columns, (1.5 + 0.15 * lines) * rows), squeeze=False,
                                layout="constrained")  # keeps each caption clear of the image above it
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, label in zip(axes.flat, images, titles, strict=False):
        axis.imshow(image, cmap="gray", vmin=0, vmax=1) if not isinstance(image, Image.Image) else axis.imshow(image)
        axis.set_title(label, fontsize=7)
    figure.suptitle(title, fontsize=9)
    return figure
