"""The practice's sanity checks, each a function of a `Setup`: `python -m runner.check +experiment=flowers`.

Neural network training fails silently: everything runs and the result is quietly worse.
Each check below is one experiment from the practice that catches such a bug early; it
returns a figure it measured, what was expected, a verdict (PASS, WARN, FAIL) and the fix.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from runner import models
from runner.data import datasets, introspect, transforms
from runner.training.optim import build_optimizer

PREFLIGHT = ("data", "loss_at_init", "batch_independence", "gradients_flow", "train_eval_mode")


@dataclass
class Result:
    check: str
    figure: str
    expected: str
    verdict: str  # PASS | WARN | FAIL
    fix: str = ""
    details: dict = field(default_factory=dict)


@dataclass
class Setup:
    """What the checks look at: the composed config, its splits, and a way to make a fresh model."""

    cfg: object
    splits: dict
    make_model: Callable[..., nn.Module]  # make_model(init_output_bias="none"|"prior") -> a fresh model
    device: torch.device = torch.device("cpu")

    @property
    def num_classes(self) -> int:
        return self.cfg.dataset.num_classes

    def batch(self, split: str = "train", size: int | None = None, seed: int = 0,
              classes: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed, seeded random batch of the split (of some classes only), as the model sees it."""
        dataset = self.splits[split]
        pool = torch.arange(len(dataset))
        if classes is not None:
            pool = torch.isin(introspect.labels_of(dataset), torch.tensor(classes)).nonzero().flatten()
        size = min(size or self.cfg.checks.batch_size, len(pool))
        indices = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:size]].tolist()
        xs, ys = zip(*(dataset[i] for i in indices), strict=True)
        return torch.stack(xs).to(self.device), torch.as_tensor([int(y) for y in ys]).to(self.device)


def fresh(setup: Setup, **kwargs) -> nn.Module:
    torch.manual_seed(setup.cfg.trainer.seed)
    return setup.make_model(**kwargs).to(setup.device)


def class_counts(setup: Setup, split: str = "train") -> torch.Tensor:
    return torch.bincount(introspect.labels_of(setup.splits[split]), minlength=setup.num_classes)


def fmt(values) -> str:
    return "[" + ", ".join(f"{float(v):.2f}" for v in values) + "]"


# ---------------------------------------------------------------------------------------------
# the data


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
    if (mean.abs() > 0.5).any() or ((std < 0.5) | (std > 2.0)).any():
        configured_mean, configured_std = transforms.channel_stats(setup.cfg.dataset)
        raw_mean = [m * s + c for m, s, c in zip(mean.tolist(), configured_std, configured_mean, strict=True)]
        return Result("data", figure, expected, "WARN", "inputs are not standardized: set dataset.mean and "
                      f"dataset.std to the training pixels' per-channel statistics (the mean is about {fmt(raw_mean)})",
                      details)
    return Result("data", figure, expected, "PASS", details=details)


def content_hashes(dataset) -> list[str]:
    """One hash per sample: of the file's bytes where the dataset reads files, else of the stored tensor."""
    files = introspect.image_files(dataset)
    if files is not None:
        return [hashlib.sha1(Path(f).read_bytes()).hexdigest() for f in files]
    if isinstance(dataset, datasets.TransformedTensors):  # hash what is stored, not a random augmentation
        return [hashlib.sha1(image.numpy().tobytes()).hexdigest() for image in dataset.images]
    return [hashlib.sha1(dataset[i][0].numpy().tobytes()).hexdigest() for i in range(len(dataset))]


def check_splits(setup: Setup) -> Result:
    """Label histogram per split, imbalance, train/val label shift, exact duplicates across splits."""
    from scipy.stats import chi2_contingency

    counts = {split: class_counts(setup, split) for split, ds in setup.splits.items() if len(ds)}
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
    figure = (f"{', '.join(f'{s} {int(c.sum())}' for s, c in counts.items())}; imbalance {imbalance:.1f}x; "
              f"train/val label shift p={p_value:.2g}; {len(shared)} images in two splits")
    details = {"histograms": {s: c.tolist() for s, c in counts.items()}, "imbalance": imbalance,
               "label_shift_p_value": p_value, "duplicates_across_splits": shared[:50]}
    expected = "no image in two splits, same label distribution in train and val (p > 0.001)"
    if shared:
        return Result("splits", figure, expected, "FAIL", f"remove the images found in two splits (e.g. "
                      f"{shared[0][0]} = {shared[0][1]}): validation leaks training data", details)
    if p_value < 1e-3:
        return Result("splits", figure, expected, "WARN", "train and val label distributions differ: split "
                      "with stratification, or know that validation measures a shifted distribution", details)
    if (train == 0).any():
        missing = (train == 0).nonzero().flatten().tolist()
        return Result("splits", figure, expected, "WARN", f"classes {missing[:10]} have no training example", details)
    return Result("splits", figure, expected, "PASS", details=details)


def scan_files(files: list[Path], channels: int) -> tuple[list, list[str], list[str]]:
    """Each file once: ([(path, (width, height), bytes)], undecodable names, grayscale names)."""
    from PIL import Image

    records, broken, gray = [], [], []
    for path in dict.fromkeys(files):
        try:
            with Image.open(path) as image:
                mode, size = image.mode, image.size
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
    figure = (f"{len(records)} images, sizes {min(w * h for _, (w, h), _ in records)}..{max(w * h for _, (w, h), _ in records)} px, "
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


# ---------------------------------------------------------------------------------------------
# the model at init


def loss_at_init(setup: Setup, init_output_bias: str = "none") -> float:
    model = fresh(setup, init_output_bias=init_output_bias).eval()
    x, y = setup.batch()
    with torch.no_grad():
        return float(F.cross_entropy(model(x).float(), y))


def check_loss_at_init(setup: Setup) -> Result:
    """The initial loss against -ln(1/C) (or the prior's entropy when the bias starts at the prior)."""
    bias = setup.cfg.model.get("init_output_bias", "none")
    measured = loss_at_init(setup, bias)
    if bias == "prior":
        prior = class_counts(setup).float() / class_counts(setup).sum()
        expected_value, expected = float(-(prior[prior > 0] * prior[prior > 0].log()).sum()), "entropy of the class prior"
    else:
        expected_value, expected = math.log(setup.num_classes), f"-ln(1/{setup.num_classes})"
    figure = f"{measured:.3f}"
    expected = f"{expected} = {expected_value:.3f}"
    gap = abs(measured - expected_value) / expected_value
    fix = ("the logits at init are too large or biased: scale down the last layer's initial weights, "
           "check that the loss gets logits (not probabilities) and that labels match the outputs")
    if gap <= 0.25:
        return Result("loss_at_init", figure, expected, "PASS", details={"measured": measured, "expected": expected_value})
    return Result("loss_at_init", figure, expected, "WARN" if gap <= 1.0 else "FAIL", fix,
                  {"measured": measured, "expected": expected_value})


def check_output_bias(setup: Setup) -> Result:
    """model.init_output_bias=prior: how much it lowers the loss at init."""
    uniform, prior = loss_at_init(setup, "none"), loss_at_init(setup, "prior")
    counts = class_counts(setup)
    imbalance = float(counts[counts > 0].max() / counts[counts > 0].min())
    figure = f"loss at init {uniform:.3f} -> {prior:.3f} with the prior bias (classes {imbalance:.1f}x imbalanced)"
    details = {"uniform_bias": uniform, "prior_bias": prior, "imbalance": imbalance}
    if prior > uniform + 0.01:
        return Result("output_bias", figure, "no higher than without", "WARN",
                      "the prior bias raised the loss: the output layer's bias may not be the logits' offset", details)
    fix = "set model.init_output_bias=prior" if uniform - prior > 0.05 and setup.cfg.model.get("init_output_bias") != "prior" else ""
    return Result("output_bias", figure, "no higher than without", "WARN" if fix else "PASS", fix, details)


def check_batch_independence(setup: Setup) -> Result:
    """The gradient of sample i's output reaches input i only (catches view-for-permute and batch mixing)."""
    model = fresh(setup)
    mode = "eval" if models.has_batch_norm(model) else "train"
    model.train(mode == "train")
    x, _ = setup.batch(size=3)
    x = x.clone().requires_grad_(True)
    model(x)[1].sum().backward()
    per_sample = x.grad.abs().flatten(1).sum(dim=1)
    leaks = [i for i in (0, 2) if per_sample[i] > 0]
    figure = f"gradient of sample 1's output reaches samples {[i for i in range(3) if per_sample[i] > 0]}"
    note = " (BatchNorm: checked in eval mode)" if mode == "eval" else ""
    if leaks or per_sample[1] == 0:
        return Result("batch_independence", figure + note, "only sample 1", "FAIL",
                      "the model mixes samples across the batch: look for a view/reshape where a permute/transpose "
                      "was meant, or a statistic taken over the batch dimension")
    return Result("batch_independence", figure + note, "only sample 1", "PASS")


def check_gradients_flow(setup: Setup) -> Result:
    """Every trainable parameter gets a finite, non-zero gradient and changes after one update."""
    model = fresh(setup).train()
    x, y = setup.batch()
    F.cross_entropy(model(x), y).backward()
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    problems = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            problems[name] = "no gradient (unused)"
        elif not torch.isfinite(p.grad).all():
            problems[name] = "non-finite gradient"
        elif not p.grad.any():
            problems[name] = "zero gradient"
    build_optimizer(setup.cfg.optimizer, model).step()
    for name, p in model.named_parameters():
        if name in before and name not in problems and torch.equal(before[name], p.detach()):
            problems[name] = "unchanged after a step"
    figure = f"{len(before) - len(problems)} of {len(before)} parameters"
    if problems:
        listed = "; ".join(f"{k}: {v}" for k, v in list(problems.items())[:5])
        return Result("gradients_flow", figure, "all trainable parameters", "FAIL",
                      f"dead or unused parameters ({listed}): remove them, or fix the forward pass that skips them",
                      {"problems": problems})
    return Result("gradients_flow", figure, "all trainable parameters", "PASS")


def check_train_eval_mode(setup: Setup) -> Result:
    """Dropout/BatchNorm change outputs between train and eval mode; eval passes repeat exactly."""
    model = fresh(setup)
    x, _ = setup.batch(size=16)
    stochastic = any(isinstance(m, (nn.Dropout, nn.modules.batchnorm._BatchNorm)) for m in model.modules())
    with torch.no_grad():
        model.eval()
        first, second = model(x), model(x)
        model.train()
        trained = model(x)
    repeatable = torch.equal(first, second)
    differs = not torch.allclose(first, trained)
    figure = (f"eval passes {'identical' if repeatable else 'DIFFER'}; train vs eval "
              f"{'differ' if differs else 'identical'}" + ("" if stochastic else " (no dropout or BatchNorm)"))
    expected = "eval passes identical" + ("; train and eval differ" if stochastic else "")
    if not repeatable:
        return Result("train_eval_mode", figure, expected, "FAIL", "something random runs in eval mode: use "
                      "nn.Dropout (not F.dropout(training=True)) and respect self.training")
    if stochastic and not differs:
        return Result("train_eval_mode", figure, expected, "WARN", "dropout/BatchNorm have no effect in training "
                      "mode: check that the model is switched with model.train()")
    return Result("train_eval_mode", figure, expected, "PASS")


# ---------------------------------------------------------------------------------------------
# short trainings


def train_steps(setup: Setup, model: nn.Module, batches, steps: int, lr: float | None = None) -> list[float]:
    """`steps` updates of the configured optimizer over the batches (cycled); the loss of each."""
    optimizer_cfg = copy.deepcopy(setup.cfg.optimizer)
    if lr is not None:
        optimizer_cfg.lr = lr
    optimizer = build_optimizer(optimizer_cfg, model)
    losses = []
    model.train()
    for step in range(steps):
        x, y = batches[step % len(batches)]
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def check_overfit_batch(setup: Setup) -> Result:
    """A handful of samples must reach near-zero loss and 100% accuracy within the step budget."""
    settings = setup.cfg.checks
    x, y = setup.batch(size=settings.overfit_samples)
    model = fresh(setup)
    losses = train_steps(setup, model, [(x, y)], settings.overfit_steps, settings.overfit_lr)
    model.eval()
    with torch.no_grad():
        logits = model(x)
        final = float(F.cross_entropy(logits, y))
        accuracy = float((logits.argmax(1) == y).float().mean())
    figure = f"loss {losses[0]:.3f} -> {final:.4f}, accuracy {100 * accuracy:.0f}% after {len(losses)} steps"
    expected = "loss < 0.05, accuracy 100%"
    details = {"losses": losses[:: max(1, len(losses) // 50)], "final_loss": final, "accuracy": accuracy}
    if final < 0.05 and accuracy == 1.0:
        return Result("overfit_batch", figure, expected, "PASS", details=details)
    verdict = "WARN" if accuracy == 1.0 and final < 0.5 else "FAIL"  # slow, or stuck far above zero
    return Result("overfit_batch", figure, expected, verdict,
                  "the model cannot fit 8 samples: check the loss gets raw logits (no softmax before "
                  "cross-entropy), that labels match inputs, and try checks.overfit_lr / more checks.overfit_steps",
                  details)


def check_input_independent(setup: Setup) -> Result:
    """The same short training with zeroed inputs must do clearly worse on validation than with real ones.

    Both train on the checks.baseline_classes most frequent classes only.
    """
    settings = setup.cfg.checks
    # on a few classes the signal shows within a short budget, also for a 102-class problem
    classes = class_counts(setup).argsort(descending=True)[: settings.baseline_classes].tolist()
    batches = [setup.batch(size=settings.baseline_batch_size, seed=seed, classes=classes) for seed in range(8)]
    val_x, val_y = setup.batch("val", size=512, classes=classes)
    figures = {}
    for name, transform in (("real", lambda x: x), ("zeroed", torch.zeros_like)):
        model = fresh(setup)
        train_steps(setup, model, [(transform(x), y) for x, y in batches], settings.baseline_steps)
        model.eval()
        with torch.no_grad():
            logits = model(transform(val_x)).detach()
        figures[name] = {"loss": float(F.cross_entropy(logits, val_y)),
                         "accuracy": float((logits.argmax(1) == val_y).float().mean())}
    real, zeroed = figures["real"], figures["zeroed"]
    # a short training may not lower the loss yet on many classes, but real inputs must already
    # lift accuracy beyond what chance would explain (one-sided two-proportion z-test, p < 0.001)
    p_value = accuracy_p_value(real["accuracy"], zeroed["accuracy"], len(val_y))
    figures["accuracy_p_value"] = p_value
    figure = (f"validation loss {real['loss']:.3f} / accuracy {100 * real['accuracy']:.1f}% with inputs, "
              f"{zeroed['loss']:.3f} / {100 * zeroed['accuracy']:.1f}% with zeroed inputs")
    expected = "clearly better with inputs"
    if real["loss"] < 0.9 * zeroed["loss"] or p_value < 1e-3:
        return Result("input_independent", figure, expected, "PASS", details=figures)
    return Result("input_independent", figure, expected, "FAIL",
                  "the model does not use its input: check the forward pass reads x, the labels belong to "
                  "the images (not shuffled apart), and the learning rate", figures)


def accuracy_p_value(better: float, baseline: float, n: int) -> float:
    """One-sided p-value that accuracy `better` exceeds `baseline` by chance, both measured on n samples."""
    pooled = (better + baseline) / 2
    spread = math.sqrt(max(2 * pooled * (1 - pooled) / n, 1e-12))
    return 0.5 * math.erfc((better - baseline) / spread / math.sqrt(2))


CHECKS: dict[str, Callable[[Setup], Result]] = {
    "data": check_data,
    "splits": check_splits,
    "outliers": check_outliers,
    "loss_at_init": check_loss_at_init,
    "output_bias": check_output_bias,
    "overfit_batch": check_overfit_batch,
    "input_independent": check_input_independent,
    "batch_independence": check_batch_independence,
    "gradients_flow": check_gradients_flow,
    "train_eval_mode": check_train_eval_mode,
}


def run(setup: Setup, names) -> list[Result]:
    """The named checks (in the order above); one that crashes is a FAIL naming the error."""
    results = []
    for name in CHECKS:
        if name not in names:
            continue
        try:
            results.append(CHECKS[name](setup))
        except Exception as error:
            results.append(Result(name, f"crashed: {type(error).__name__}: {error}", "to run", "FAIL",
                                  "fix the error above (the same code runs in training)"))
    return results


def setup_for(cfg, device: torch.device) -> Setup:
    """The Setup of a composed config: its splits and its model, as training would build them."""
    splits = datasets.build_splits(cfg.dataset)
    counts = torch.bincount(introspect.labels_of(splits["train"]), minlength=cfg.dataset.num_classes)

    def make_model(init_output_bias: str | None = None) -> nn.Module:
        model_cfg = copy.deepcopy(cfg.model)
        if init_output_bias is not None:
            model_cfg.init_output_bias = init_output_bias
        return models.build(model_cfg, class_counts=counts)

    return Setup(cfg, splits, make_model, device)
