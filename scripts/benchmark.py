"""python scripts/benchmark.py [--quick] [--rounds 3] [--max-rounds 15] [--out benchmark.json]

Speed figures of runner, each a ratio against a baseline measured in the same run, in rounds
that alternate the two sides (so a machine that slows down or speeds up mid-run hurts both),
reported as the median with min and max over the rounds. A ratio takes --rounds rounds, then
more until the 95% interval of its median (from order statistics: 6 rounds at least) is
narrower than 5% of it, or --max-rounds; each figure says how many rounds it took, and when
it could not get under 5% (a machine busy with other work):

  loop_ratio_fp32/bf16  runner's training loop (fit) vs a bare loop with the same accumulation
                        (one optimizer step per learning batch), images/s of the second epoch
  e2e_ratio_nocache     real-size JPEGs (about 500x667, like Flowers-102) decoded by the loader's
                        workers vs the same images already decoded in memory; data_wait_nocache
                        is the share of the JPEG epoch spent waiting for data
  sample_ratio_jpeg     a loader worker's work for one training sample from a real-size JPEG: runner's
                        (draft-mode decode, resize to uint8; the crop, flip and standardization follow per
                        batch on the device) vs torchvision's usual (full decode, random crop, flip,
                        ToTensor, Normalize), samples/s in one process
  e2e_ratio_cache       the same from the decoded-image cache (dataset.cache=disk), built first;
                        data_wait_cache its data-wait share, cache_build_images_per_s its build rate
  e2e_ratio_cache_device  the same with dataset.cache=device (on a CPU-only machine the device is
                        the CPU: no loader workers, batches gathered and finished in the main process)
  eval_ratio            the evaluator's forward pass (eval loader + predict) vs training, images/s
  first_log_s           seconds from launching `python -m runner` to its first log line
  first_update_s        ... to the log line of its first optimizer update
  frozen_ratio          model=resnet18 model.freeze=backbone vs the same model fully trainable, images/s of
                        the second epoch (the frozen backbone computes no backward: the ratio is the saving);
                        frozen_/trainable_epoch_s each side's epoch time
  resize_ratio          trainer.progressive_resize: the ConvNet's epoch at the ramp's start (half the size)
                        vs its epoch at the final size, images/s, in the same run (3 epochs: half, about 3/4, full);
                        resize_start_/resize_end_epoch_s each epoch's time
  aug_<name>_ratio      one micro-batch of 32 at the benchmark's size, finished (crop+flip and the augmentation:
                        trivial, rand (n=2, m=9), erasing (p=0.25), mixup (0.2), cutmix (1.0)) then a ConvNet
                        forward, backward and AdamW step, vs the same with crop+flip only: seconds over seconds
                        (1.03: the augmentation costs 3% of a step)
  ema_ratio             the same step followed by trainer.ema's update vs without it
  distill_teacher_over_student  loss=distill with two ConvNet teachers: the teachers' forward on a micro-batch
                        over the student's step (forward, distillation loss, backward)
  histogram_step_over_update  trainer.log_histograms_every: one histogram step (every layer's weights and last
                        update, read back and written to TensorBoard) over one ConvNet update of 32 images
  histograms_ratio_every_100  training with log_histograms_every=100 over without, from each round's figure
                        (1 + ratio / 100; the other updates cost a modulo); the issue's goal: under 1.02
  gpu_*_images_per_s    on a CUDA GPU only: images/s end to end on real-size JPEGs, bf16, second epoch:
                        the flagship ConvNet at 128 px with dataset.cache=device, and ResNet-50 at 224 px
                        (channels_last, compiled) with cache=device, disk and none (`--gpu-device cpu`
                        runs the section tiny on the CPU, to check it works)

--quick finishes in a few minutes on 2 CPU cores (small images and sets); `--sections` picks
some of loop, transfer (frozen_ratio, resize_ratio), regularization (aug_*, ema, distill), histograms, jpeg,
launch, gpu. Every figure is printed and, with --out, written to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from runner.config.precheck import compose_config  # noqa: E402
from runner.config.schema import register_configs  # noqa: E402
from runner.data import datasets, loaders  # noqa: E402
from runner.evaluation.evaluator import predict  # noqa: E402
from runner.training import loop  # noqa: E402
from runner.training.optim import build_optimizer  # noqa: E402
from runner.training.step import micro_batch_loss  # noqa: E402

CPU = torch.device("cpu")
SPREAD_GOAL = 0.05  # the median ratio's 95% interval, relative to it: narrower than the goals' margins (0.98)
MAX_ROUNDS = 15  # a machine too busy for SPREAD_GOAL: stop there and say so


def config(*overrides: str):
    register_configs()
    return compose_config("train", ["checkpoint.every_epochs=1000", "trainer.log_every_steps=100000", *overrides])


def runner_images_per_s(cfg, train_set, data_wait: list | None = None, device: torch.device = CPU) -> float:
    """fit() for two epochs in a scratch folder; images/s of the second (the first warms up)."""
    from runner import models

    torch.manual_seed(0)
    model = models.build(cfg.model)
    captured = []
    real = loop.report_interval
    loop.report_interval = lambda run, figures, epoch, bar: captured.append(figures) or real(run, figures, epoch, bar)
    try:
        with tempfile.TemporaryDirectory() as folder:
            figures = loop.fit(cfg, Path(folder), train_set, model, device, writer=None, provenance={},
                               resume_state=None)
    finally:
        loop.report_interval = real
    if data_wait is not None:
        data_wait.append(captured[-1]["data_wait_fraction"])
    return len(train_set) / figures["seconds"]


def bare_images_per_s(cfg, train_set) -> float:
    """The same model, data order and accumulation with nothing else: forward, backward, one step per learning batch."""
    from runner import models
    from runner.training.losses import build_loss

    torch.manual_seed(0)
    model = models.build(cfg.model)
    optimizer = build_optimizer(cfg.optimizer, model)
    loss = build_loss(cfg.loss)
    data = torch.utils.data.DataLoader(train_set, batch_size=cfg.trainer.micro_batch_size, shuffle=True,
                                       num_workers=cfg.trainer.num_workers)
    amp = torch.bfloat16 if str(cfg.trainer.precision) == "bf16" else None
    per_update = cfg.trainer.batch_size // cfg.trainer.micro_batch_size
    seconds = 0.0
    for _ in range(2):
        started = time.perf_counter()
        for index, (x, y) in enumerate(data):
            step_loss, _, _ = micro_batch_loss(model, x, y, cfg.trainer.batch_size, loss, amp)
            step_loss.backward()
            if (index + 1) % per_update == 0:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - started
    return len(train_set) / seconds


def in_memory(dataset) -> torch.utils.data.Dataset:
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return torch.utils.data.TensorDataset(torch.stack(xs), torch.as_tensor(ys))


def make_jpegs(root: Path, count: int, classes: int = 4) -> Path:
    """Photo-like JPEGs at Flowers-102's typical size (500x667): smooth colour fields plus noise."""
    rng = np.random.default_rng(0)
    for index in range(count):
        folder = root / f"class_{index % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((667, 500), Image.BICUBIC)
        pixels = np.clip(np.asarray(image, dtype=np.int16) + rng.integers(-12, 12, (500, 667, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{index:05d}.jpg", quality=90)
    return root


def samples_per_s(sample, size: int, count: int = 64) -> float:
    started = time.perf_counter()
    for index in range(count):
        sample(index % size)
    return count / (time.perf_counter() - started)


def torchvision_usual(root: Path, cfg):
    """An ImageFolder with torchvision's usual per-sample path: full decode, crop, flip, ToTensor, Normalize."""
    from torchvision import transforms as tv
    from torchvision.datasets import ImageFolder

    from runner.data.transforms import channel_stats, image_hw

    return ImageFolder(root, transform=tv.Compose([
        tv.RandomResizedCrop(image_hw(cfg.image_size), antialias=True), tv.RandomHorizontalFlip(), tv.ToTensor(),
        tv.Normalize(*channel_stats(cfg))]))


def rounds_of(count: int, baseline, measured, most: int = MAX_ROUNDS) -> list[float]:
    """measured/baseline in `count` rounds at least, alternating which side goes first, then more until the
    median's interval is narrower than SPREAD_GOAL of it (a noisy machine needs more), `most` at most."""
    ratios: list[float] = []
    while len(ratios) < count or (len(ratios) < most and not precise_enough(ratios)):
        if len(ratios) % 2:
            b = measured(), baseline()
            ratios.append(b[0] / b[1])
        else:
            a = baseline(), measured()
            ratios.append(a[1] / a[0])
    return ratios


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """The distribution-free interval of the median: the k-th smallest and k-th largest value, with k the
    largest for which P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2. None when n is too small for one."""
    ordered, n = sorted(values), len(values)
    k, below = 0, 0.0
    while k < n and below + math.comb(n, k) / 2**n <= (1 - confidence) / 2:
        below += math.comb(n, k) / 2**n
        k += 1
    return (ordered[k - 1], ordered[n - k]) if k else None


def spread(values: list[float]) -> float | None:
    """The width of the median's 95% interval, relative to the median; None with too few rounds for one."""
    interval = median_interval(values)
    return None if interval is None else (interval[1] - interval[0]) / statistics.median(values)


def precise_enough(ratios: list[float]) -> bool:
    width = spread(ratios)
    return width is not None and width < SPREAD_GOAL


def described(values: list[float]) -> str:
    """median (min..max), the median's interval and the rounds taken, in one line."""
    line = f"{statistics.median(values):.3f} ({min(values):.3f}..{max(values):.3f}) in {len(values)} rounds"
    interval, width = median_interval(values), spread(values)
    if interval is not None:
        line += f", median's 95% interval {interval[0]:.3f}..{interval[1]:.3f} (spread {width:.1%})"
    if width is None or width >= SPREAD_GOAL:
        line += (f": could not get the spread under {SPREAD_GOAL:.0%} in {len(values)} rounds (a busy machine: "
                 "run it on a quiet one, or with more --max-rounds)")
    return line


def launch_times(rounds: int) -> tuple[list[float], list[float]]:
    """Seconds to the first log line and to the first update's log line of `python -m runner`."""
    first_log, first_update = [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            process = subprocess.Popen([sys.executable, "-m", "runner", "trainer.epochs=1", "trainer.log_every_steps=1",
                                        "evaluate.after_training=false", f"hydra.run.dir={folder}/run"], cwd=folder,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       env={**os.environ, "PYTHONPATH": str(PROJECT)})
            log_seen = None
            for line in process.stdout:
                now = time.perf_counter() - started
                if log_seen is None and " INFO " in line:
                    log_seen = now
                if "step 1 (epoch 1)" in line:
                    first_update.append(now)
                    break
            process.kill()
            process.wait()
            first_log.append(log_seen)
    return first_log, first_update


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def loop_figures(figures: dict, samples: int, size: int, ratios: Callable) -> None:
    """(a) runner's loop vs a bare loop with the same accumulation, fp32 and bf16."""
    for precision in ("32", "bf16"):
        cfg = config("model=convnet", "dataset=synthetic", f"dataset.train_size={samples}",
                     f"dataset.image_size=[{size},{size}]", "trainer.batch_size=64", "trainer.micro_batch_size=32",
                     f"trainer.precision={precision}", "trainer.epochs=2")
        train_set = datasets.build_splits(cfg.dataset)["train"]
        key = "loop_ratio_fp32" if precision == "32" else "loop_ratio_bf16"
        figures[key] = ratios(lambda c=cfg, t=train_set: bare_images_per_s(c, t),
                              lambda c=cfg, t=train_set: runner_images_per_s(c, t))
        print(f"{key}: {described(figures[key])}", flush=True)



def epoch_seconds(cfg, train_set) -> list[float]:
    """fit() in a scratch folder; the seconds of each epoch."""
    from runner import models

    torch.manual_seed(0)
    model = models.build(cfg.model)
    seconds = []
    real = loop.end_of_epoch
    loop.end_of_epoch = lambda run, epoch, skip, loss, correct, s: seconds.append(s) or real(run, epoch, skip, loss,
                                                                                             correct, s)
    try:
        with tempfile.TemporaryDirectory() as folder:
            loop.fit(cfg, Path(folder), train_set, model, CPU, writer=None, provenance={}, resume_state=None)
    finally:
        loop.end_of_epoch = real
    return seconds


def transfer_figures(figures: dict, samples: int, size: int, ratios: Callable) -> None:
    """(f) a frozen backbone's epoch vs a fully trainable one; (g) progressive resizing's first vs last epoch."""
    common = ["dataset=synthetic", f"dataset.train_size={samples}", f"dataset.image_size=[{size},{size}]",
              "trainer.batch_size=64", "trainer.micro_batch_size=64", "trainer.epochs=2"]
    trainable, frozen = config(*common, "model=resnet18"), config(*common, "model=resnet18", "model.freeze=backbone")
    train_set = datasets.build_splits(trainable.dataset)["train"]
    speeds: dict[str, list[float]] = {"trainable": [], "frozen": []}

    def images_per_s(side: str, cfg) -> float:
        speeds[side].append(runner_images_per_s(cfg, train_set))
        return speeds[side][-1]
    figures["frozen_ratio"] = ratios(lambda: images_per_s("trainable", trainable), lambda: images_per_s("frozen", frozen))
    for side in speeds:
        figures[f"{side}_epoch_s"] = [samples / speed for speed in speeds[side]]
    print(f"frozen_ratio: {described(figures['frozen_ratio'])}; epoch {summary(figures['trainable_epoch_s'])} s "
          f"trainable, {summary(figures['frozen_epoch_s'])} s frozen", flush=True)

    resized = config(*common, "model=convnet", "trainer.epochs=3", "trainer.progressive_resize={start:0.5,end_epoch:0.6}")
    resize_set = datasets.build_splits(resized.dataset)["train"]
    epochs: list[list[float]] = []

    def start_over_end() -> float:  # images/s at the ramp's start over images/s at its end: one run, both epochs
        epochs.append(epoch_seconds(resized, resize_set))
        return epochs[-1][-1] / epochs[-1][0]
    figures["resize_ratio"] = ratios(lambda: 1.0, start_over_end)
    figures["resize_start_epoch_s"], figures["resize_end_epoch_s"] = [e[0] for e in epochs], [e[-1] for e in epochs]
    print(f"resize_ratio: {described(figures['resize_ratio'])}; epoch {summary(figures['resize_start_epoch_s'])} s at "
          f"{size // 2} px, {summary(figures['resize_end_epoch_s'])} s at {size} px", flush=True)


def histogram_figures(figures: dict, size: int, ratios: Callable, model_name: str = "convnet") -> None:
    """(i) trainer.log_histograms_every: one histogram step (the weights kept before the update, then every
    layer's statistics, read back and written to TensorBoard) over one ConvNet update (a micro-batch of 32:
    forward, backward, AdamW step); the on/off ratio at N=100 from each round's figure. Short steps timed in
    alternation, not whole epochs: on a shared machine an epoch's time varies more than the 2% asked."""
    from torch.utils.tensorboard import SummaryWriter

    from runner import models
    from runner.training.histograms import Histograms

    cfg = config(f"model={model_name}", "dataset=synthetic", f"dataset.image_size=[{size},{size}]")
    torch.manual_seed(0)
    model = models.build(cfg.model)
    optimizer = build_optimizer(cfg.optimizer, model)
    x, y = torch.randn(32, 3, size, size), torch.randint(0, int(cfg.dataset.num_classes), (32,))

    def update_seconds(steps: int = 3) -> float:
        started = time.perf_counter()
        for _ in range(steps):
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return (time.perf_counter() - started) / steps

    with tempfile.TemporaryDirectory() as folder, SummaryWriter(folder) as writer:
        histograms = Histograms(model, writer, every=1)

        def histogram_seconds(steps: int = 3) -> float:
            started = time.perf_counter()
            for step in range(steps):
                histograms.before_update(step)
                histograms.after_update(step + 1)
            return (time.perf_counter() - started) / steps
        figures["histogram_step_over_update"] = ratios(update_seconds, histogram_seconds)
    figures["histograms_ratio_every_100"] = [1 + ratio / 100 for ratio in figures["histogram_step_over_update"]]
    parameters = sum(p.numel() for p in model.parameters())
    print(f"histogram_step_over_update: {described(figures['histogram_step_over_update'])} ({model_name}, "
          f"{parameters:,} parameters in {len(list(model.parameters()))} tensors, {size} px)", flush=True)
    print(f"histograms_ratio_every_100: {described(figures['histograms_ratio_every_100'])}", flush=True)


def regularization_figures(figures: dict, size: int, ratios: Callable) -> None:
    """(h) each augmentation's and the EMA's cost per micro-batch, as a share of a ConvNet step; distillation's
    teacher forward over the student's step."""
    from runner import models
    from runner.data.auto_augment import SampleOps
    from runner.data.batch_augment import Finish
    from runner.data.mixing import Mixing
    from runner.training import averaging, distill

    cfg = config("model=convnet", "dataset=synthetic", f"dataset.image_size=[{size},{size}]")
    torch.manual_seed(0)
    model = models.build(cfg.model)
    optimizer = build_optimizer(cfg.optimizer, model)
    stored = round(size * 1.15)  # the file-backed datasets store images at most 1.15x the crop
    pixels = torch.randint(0, 256, (32, stored, stored, 3), dtype=torch.uint8)
    labels, seeds = torch.randint(0, int(cfg.dataset.num_classes), (32,)), torch.arange(32)
    crop_flip = Finish((size, size), (0.5,) * 3, (0.5,) * 3, True)
    mixings = {"mixup": Mixing(int(cfg.dataset.num_classes), mixup_alpha=0.2),
               "cutmix": Mixing(int(cfg.dataset.num_classes), cutmix_alpha=1.0)}
    finishes = {"trivial": SampleOps("trivial"), "rand": SampleOps("rand", 2, 9), "erasing": SampleOps(erasing=0.25)}

    def step_seconds(finish=crop_flip, mixing=None, ema=None, steps: int = 3) -> float:
        """Seconds of `steps` micro-batch steps (several: one step's time is too noisy a figure)."""
        started = time.perf_counter()
        for step in range(steps):
            x, y = finish(pixels, seeds + 32 * step), labels
            if mixing is not None:
                x, y = mixing(x, y, step)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                averaging.update_ema(ema)
        return time.perf_counter() - started

    variants = {name: partial(step_seconds, finish=Finish((size, size), (0.5,) * 3, (0.5,) * 3, True, ops))
                for name, ops in finishes.items()}
    variants.update({name: partial(step_seconds, mixing=mixing) for name, mixing in mixings.items()})
    for name, measured in variants.items():
        figures[f"aug_{name}_ratio"] = ratios(step_seconds, measured)
        print(f"aug_{name}_ratio: {described(figures[f'aug_{name}_ratio'])}", flush=True)
    ema = averaging.new_ema(model, 0.999)
    figures["ema_ratio"] = ratios(step_seconds, partial(step_seconds, ema=ema))
    print(f"ema_ratio: {described(figures['ema_ratio'])}", flush=True)
    teachers = distill.Distillation([models.build(cfg.model), models.build(cfg.model)], temperature=4.0, alpha=0.9)
    x = crop_flip(pixels, seeds)
    figures["distill_teacher_over_student"] = [
        seconds["teacher_forward"] / seconds["student_step"]
        for seconds in (distill.step_seconds(teachers, model, x, labels) for _ in range(3))]
    print(f"distill_teacher_over_student: {described(figures['distill_teacher_over_student'])}", flush=True)


def jpeg_figures(figures: dict, samples: int, size: int, ratios: Callable) -> None:
    """(b) end to end on real-size JPEGs vs in memory, per cache setting; (c) the evaluator; (e) the cache build."""
    with tempfile.TemporaryDirectory() as folder:
        root = make_jpegs(Path(folder) / "jpegs", samples)
        jpeg_overrides = ["model=convnet", "dataset=imagefolder", f"dataset.root={root}", "dataset.val_fraction=0.1",
                          f"dataset.image_size=[{size},{size}]", "dataset.augment=basic", "trainer.batch_size=64",
                          "trainer.micro_batch_size=32", "trainer.num_workers=2", "trainer.epochs=2"]
        cfg = config(*jpeg_overrides)
        jpegs = datasets.build_splits(cfg.dataset)["train"]
        usual = torchvision_usual(root, cfg.dataset)
        figures["sample_ratio_jpeg"] = ratios(lambda: samples_per_s(usual.__getitem__, len(usual)),
                                              lambda: samples_per_s(jpegs.pixels, len(jpegs)))
        print(f"sample_ratio_jpeg: {described(figures['sample_ratio_jpeg'])}", flush=True)
        decoded = in_memory(jpegs)
        waits: list[float] = []
        figures["e2e_ratio_nocache"] = ratios(lambda: runner_images_per_s(cfg, decoded),
                                              lambda: runner_images_per_s(cfg, jpegs, waits))
        figures["data_wait_nocache"] = waits
        print(f"e2e_ratio_nocache: {described(figures['e2e_ratio_nocache'])}, data wait {summary(waits)}", flush=True)

        os.environ["RUNNER_CACHE"] = str(Path(folder) / "cache")
        cached_cfg = config(*jpeg_overrides, "dataset.cache=disk")
        started = time.perf_counter()
        from_cache = datasets.build_splits(cached_cfg.dataset)["train"]  # builds the cache
        figures["cache_build_images_per_s"] = [samples / (time.perf_counter() - started)]
        cache_waits: list[float] = []
        figures["e2e_ratio_cache"] = ratios(lambda: runner_images_per_s(cfg, decoded),
                                            lambda: runner_images_per_s(cached_cfg, from_cache, cache_waits))
        figures["data_wait_cache"] = cache_waits
        print(f"e2e_ratio_cache: {described(figures['e2e_ratio_cache'])}, data wait {summary(cache_waits)}, "
              f"cache built at {figures['cache_build_images_per_s'][0]:.0f} images/s", flush=True)

        device_cfg = config(*jpeg_overrides, "dataset.cache=device")
        on_device = datasets.build_splits(device_cfg.dataset)["train"]
        device_waits: list[float] = []
        figures["e2e_ratio_cache_device"] = ratios(lambda: runner_images_per_s(cfg, decoded),
                                                   lambda: runner_images_per_s(device_cfg, on_device, device_waits))
        figures["data_wait_cache_device"] = device_waits
        print(f"e2e_ratio_cache_device: {described(figures['e2e_ratio_cache_device'])}, "
              f"data wait {summary(device_waits)}", flush=True)

        def evaluator_images_per_s() -> float:
            from runner import models

            model = models.build(cfg.model).eval()
            started = time.perf_counter()
            batch_size = cfg.trainer.micro_batch_size  # the evaluator's default: the run's micro-batch
            predict(model, loaders.eval_loader(decoded, batch_size, 0, False), torch.device("cpu"), None, "none")
            return len(decoded) / (time.perf_counter() - started)
        figures["eval_ratio"] = ratios(lambda: runner_images_per_s(cfg, decoded), evaluator_images_per_s)
        print(f"eval_ratio: {described(figures['eval_ratio'])}", flush=True)



def gpu_figures(figures: dict, device: torch.device, samples: int, sizes: tuple[int, int], rounds: int,
                compile_models: bool) -> None:
    """On a GPU, images/s end to end on real-size JPEGs (bf16, the training's second epoch): the flagship ConvNet
    with dataset.cache=device, and ResNet-50 (channels_last, compiled) with cache=device, disk and none."""
    workers = min(8, len(os.sched_getaffinity(0)))
    with tempfile.TemporaryDirectory() as folder:
        root = make_jpegs(Path(folder) / "jpegs", samples, classes=10)
        os.environ["RUNNER_CACHE"] = str(Path(folder) / "cache")
        common = ["dataset=imagefolder", f"dataset.root={root}", "dataset.num_classes=10", "dataset.val_fraction=0.05",
                  "dataset.augment=basic", f"trainer.device={device}", "trainer.precision=bf16",
                  f"trainer.num_workers={workers}", "trainer.epochs=2", "trainer.batch_size=256",
                  "trainer.micro_batch_size=256"]
        runs = {"gpu_flagship_cache_device": ["model=convnet", f"dataset.image_size=[{sizes[0]},{sizes[0]}]",
                                              "dataset.cache=device"]}
        for cache in ("device", "disk", "none"):
            runs[f"gpu_resnet50_cache_{cache}"] = ["model=resnet50", f"dataset.image_size=[{sizes[1]},{sizes[1]}]",
                                                   f"dataset.cache={cache}", "trainer.channels_last=true",
                                                   f"trainer.compile={str(compile_models).lower()}"]
        for key, overrides in runs.items():
            cfg = config(*common, *overrides)
            train = datasets.build_splits(cfg.dataset)["train"]  # builds the cache where asked
            figures[f"{key}_images_per_s"] = [runner_images_per_s(cfg, train, device=device) for _ in range(rounds)]
            print(f"{key}_images_per_s: {summary(figures[f'{key}_images_per_s'])}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small images and sets: minutes on 2 cores")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each figure (of a ratio: at least)")
    parser.add_argument("--max-rounds", type=int, default=MAX_ROUNDS,
                        help=f"rounds of a ratio at most, when its spread stays over {SPREAD_GOAL:.0%}".replace("%", "%%"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--sections", default="loop,transfer,regularization,histograms,jpeg,launch,gpu",
                        help="which figures: loop, transfer (frozen backbone, progressive resizing), regularization "
                             "(augmentations, EMA, distillation), histograms (trainer.log_histograms_every), jpeg (end to end, evaluator, cache), launch, gpu "
                             "(when CUDA is there)")
    parser.add_argument("--gpu-device", default="cuda", help="where the gpu section trains (cpu: a smoke run of it)")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    samples, size = (128, 64) if args.quick else (512, 128)
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    figures: dict[str, list[float]] = {}
    ratios = partial(rounds_of, args.rounds, most=max(args.rounds, args.max_rounds))
    if "loop" in sections:
        loop_figures(figures, samples, size, ratios)
    if "transfer" in sections:
        transfer_figures(figures, samples, size, ratios)
    if "regularization" in sections:
        regularization_figures(figures, size, ratios)
    if "histograms" in sections:
        histogram_figures(figures, size, ratios)
    if "jpeg" in sections:
        jpeg_figures(figures, samples, size, ratios)
    if "launch" in sections:
        figures["first_log_s"], figures["first_update_s"] = launch_times(args.rounds)
        print(f"first_log_s: {summary(figures['first_log_s'])}, first_update_s: {summary(figures['first_update_s'])}")

    device = torch.device(args.gpu_device)
    if "gpu" in sections and device.type == "cuda" and not torch.cuda.is_available():
        print("gpu figures: skipped, no CUDA device here", flush=True)
    elif "gpu" in sections:
        on_cpu = device.type == "cpu"  # a smoke run of the section: tiny, not compiled
        gpu_figures(figures, device, 32 if on_cpu else (1024 if args.quick else 4096), (32, 32) if on_cpu else (128, 224),
                    1 if on_cpu else args.rounds, compile_models=not on_cpu)

    machine = f"{len(os.sched_getaffinity(0))} CPU cores, torch {torch.__version__}"
    if torch.cuda.is_available():
        machine += f", {torch.cuda.get_device_name()}"
    result: dict = {"machine": machine,
                    "quick": args.quick, "rounds": args.rounds, "max_rounds": args.max_rounds}
    for key, values in figures.items():
        stats = summary(values)
        result[key], result[f"{key}_min"], result[f"{key}_max"] = stats["median"], stats["min"], stats["max"]
        result[f"{key}_rounds"], result[f"{key}_spread"] = len(values), spread(values)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
