"""Nearest neighbours for the data report (`python -m runner.inspect_data`): the closest pairs of
images within the training split and between it and validation/test, in pixel space and in the
features of a randomly initialised network (which sees shapes that pixels miss, e.g. a shifted copy).

A pair far closer than images usually are to their nearest neighbour is a near-duplicate: within
train it weighs one image twice, across splits it leaks the answer into the evaluation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from runner.data import introspect

PER_SPLIT = 1000  # a random sample of each split: the all-pairs distances stay in seconds
NEAR = 0.1  # a near-duplicate: closer than this fraction of the median nearest-neighbour distance


def random_features(channels: int) -> nn.Module:
    """A small convolutional network with fixed random weights: a generic, untrained image embedding."""
    with torch.random.fork_rng():  # the same weights every time, and the caller's random state untouched
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                             nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten()).eval()


def embeddings(images: torch.Tensor, network: nn.Module) -> dict[str, torch.Tensor]:
    """Unit vectors per image: its pixels (at most 32x32, centred) and its random-network features."""
    pixels = F.adaptive_avg_pool2d(images, (min(32, images.shape[2]), min(32, images.shape[3]))).flatten(1)
    with torch.no_grad():
        features = torch.cat([network(chunk) for chunk in images.split(256)])
    return {name: F.normalize(v - v.mean(dim=1, keepdim=True), dim=1)
            for name, v in (("pixels", pixels), ("random features", features))}


def images_of(dataset, limit: int) -> tuple[torch.Tensor, list[int]]:
    """Up to `limit` images of a split (a seeded random choice), as the model sees them, and their indices."""
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:limit].sort().values.tolist()
    return torch.stack([dataset[i][0] for i in chosen]), chosen


def closest_pairs(a: torch.Tensor, b: torch.Tensor, same: bool, k: int) -> list[tuple[float, int, int]]:
    """The k pairs (distance = 1 - cosine similarity, row in a, row in b) closest to each other."""
    distance = 1 - a @ b.T
    if same:  # each pair once, and not an image with itself
        distance = distance + torch.tril(torch.full_like(distance, float("inf")))
    values, flat = distance.flatten().topk(min(k, distance.numel()), largest=False)
    return [(float(v), int(i) // b.shape[0], int(i) % b.shape[0]) for v, i in zip(values, flat, strict=True)
            if torch.isfinite(v)]


def nearest_distance(a: torch.Tensor) -> float:
    """The median distance of an image of `a` to its nearest other image of `a`: the scale of "close"."""
    distance = 1 - a @ a.T
    distance.fill_diagonal_(float("inf"))
    return float(distance.min(dim=1).values.median())


def near_duplicates(splits: dict, channels: int, k: int = 8) -> list[dict]:
    """For each space and each pair of splits (train-train, train-val, train-test): the k closest pairs,
    the training split's median nearest-neighbour distance, and which pairs are near-duplicates.
    `splits` should be unaugmented (a random crop would hide a copy)."""
    network = random_features(channels)
    sampled = {name: images_of(dataset, PER_SPLIT) for name, dataset in splits.items() if len(dataset) > 1}
    labels = {name: introspect.labels_of(splits[name]) for name in sampled}
    embedded = {name: embeddings(images, network) for name, (images, _) in sampled.items()}
    findings = []
    for space in ("pixels", "random features"):
        scale = nearest_distance(embedded["train"][space])
        for other in sampled:
            pairs = closest_pairs(embedded["train"][space], embedded[other][space], other == "train", k)
            findings.append({"space": space, "splits": ("train", other), "scale": scale, "pairs": [
                {"distance": d, "a": sampled["train"][1][i], "b": sampled[other][1][j],
                 "labels": (int(labels["train"][sampled["train"][1][i]]), int(labels[other][sampled[other][1][j]])),
                 "near_duplicate": d < NEAR * scale} for d, i, j in pairs]})
    return findings
