"""Shared settings and fixtures: tiny configs, composing configs in-process, running the real command,
reading a run's weights, and generated dataset folders (Flowers-102, CIFAR-10, an image folder)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from scipy.io import loadmat

PROJECT = Path(__file__).resolve().parents[1]
CONF = PROJECT / "conf"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# a tiny, fast setting for in-process and command-line runs
TINY = [
    "dataset=synthetic", "dataset.num_classes=7", "dataset.image_size=[11,13]", "dataset.channels=3",
    "dataset.train_size=30", "dataset.val_size=14", "dataset.test_size=14",
    "trainer.epochs=2", "trainer.batch_size=12", "trainer.micro_batch_size=4",
    "checkpoint.every_epochs=1", "evaluate.after_training=false",
]

# a synthetic run long enough to interrupt (100 updates an epoch: 3000 samples in learning batches of 30,
# micro-batches of 10), deterministic, with dropout and augmentation: random streams a resume must restore
INTERRUPTIBLE = [
    "dataset=synthetic", "dataset.image_size=[16,16]", "dataset.train_size=3000", "dataset.val_size=10",
    "dataset.test_size=10", "dataset.augment=basic", "model.dropout=0.2",
    "trainer.batch_size=30", "trainer.micro_batch_size=10", "trainer.deterministic=true", "checkpoint.every_epochs=1",
]
# for resume tests: INTERRUPTIBLE with loader workers and a schedule, 4 epochs, evaluated after training
# (dropout, augmentation and loader workers: every random stream a resume has to restore)
EXACT_RESUME = [*INTERRUPTIBLE, "model.hidden=512", "trainer.epochs=4", "trainer.num_workers=2", "schedule=cosine"]
# for stop-signal and preemption tests: INTERRUPTIBLE for 3 epochs, no evaluation after training
STOPPABLE = [*INTERRUPTIBLE, "trainer.epochs=3", "evaluate.after_training=false"]


def options(group: str) -> list[str]:
    """The options of a config group, from its folder in conf/ (a new yaml is a new option)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_config(overrides: list[str] | None = None, config_name: str = "train", return_hydra_config: bool = False):
    """The composed config, as `python -m runner OVERRIDES` (or runner.evaluate) would see it.

    return_hydra_config=True keeps Hydra's own node (cfg.hydra: sweeper, launcher, run dir).
    """
    from runner.config.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides or []),
                       return_hydra_config=return_hydra_config)


def cli_env() -> dict:
    """The environment of a command-line run: this checkout's runner, Hydra's short errors."""
    return {**os.environ, "PYTHONPATH": str(PROJECT), "HYDRA_FULL_ERROR": "0"}


def run_cli(args: list[str], cwd: Path, module: str = "runner", timeout: float = 300):
    """`python -m runner ARGS` in cwd; returns the CompletedProcess (stdout and stderr captured)."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=cli_env())


def checkpoint_weights(run_dir: Path, epoch: int) -> dict:
    """The model's state dict in the run's checkpoint after `epoch` epochs."""
    from runner.common import checkpoint_files

    return checkpoint_files.load(Path(run_dir) / "checkpoints" / checkpoint_files.checkpoint_name(epoch))["model"]


def assert_identical(a: dict, b: dict) -> None:
    """Two state dicts with the same keys and bit-identical tensors."""
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="session")
def flowers_root(tmp_path_factory) -> Path:
    """Flowers-102 in its own on-disk layout: the real .mat files beside generated JPEGs.

    Each image is a flat colour drawn from its class (plus noise), so the label is learnable.
    torchvision.datasets.Flowers102 checks the .mat md5 sums and the jpg/ folder, not the images.
    """
    return make_flowers102(tmp_path_factory.mktemp("data"))


def make_flowers102(root: Path) -> Path:
    """The fixture's folder: root/flowers-102/{imagelabels.mat, setid.mat, jpg/image_00001.jpg ...}."""
    folder = root / "flowers-102"
    (folder / "jpg").mkdir(parents=True)
    for name in ("imagelabels.mat", "setid.mat"):
        shutil.copy(FIXTURES / "flowers102" / name, folder / name)
    labels = loadmat(folder / "imagelabels.mat", squeeze_me=True)["labels"]
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, size=(103, 3))
    for image_id, label in enumerate(labels, start=1):
        size = (20 + image_id % 7, 24 + image_id % 5)  # a few sizes, so resizing is exercised
        pixels = np.clip(palette[label] + rng.normal(0, 20, size=(*size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / "jpg" / f"image_{image_id:05d}.jpg", quality=85)
    return root


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A scratch working directory for command-line runs (their outputs/ land here)."""
    return tmp_path


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory) -> Path:
    """A tiny CIFAR-10 in torchvision's on-disk layout (see make_cifar10)."""
    return make_cifar10(tmp_path_factory.mktemp("data"))


def make_cifar10(root: Path, per_batch: int = 4) -> Path:
    """root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}, pickled as the real ones.

    per_batch images in each batch file, a flat colour per class plus noise. The files are not the
    real ones, so torchvision's md5 check of them fails: a test using this folder has to bypass it.
    """
    import pickle

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, size=(10, 3))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    for index, name in enumerate([*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]):
        labels = [(index * per_batch + i) % 10 for i in range(per_batch)]
        pixels = np.clip(palette[labels][:, :, None, None] + rng.normal(0, 20, size=(per_batch, 3, 32, 32)), 0, 255)
        batch = {"batch_label": name, "labels": labels, "data": pixels.astype(np.uint8).reshape(per_batch, 3072),
                 "filenames": [f"{name}_{i}.png" for i in range(per_batch)]}
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return root


def make_imagefolder(root: Path, classes: int = 3, per_class: int = 4, size: tuple[int, int] = (20, 24)) -> Path:
    """root/class_K/image_N.png: `classes` folders of `per_class` PNGs, a flat colour per class plus noise."""
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, size=(classes, 3))
    for label in range(classes):
        (root / f"class_{label}").mkdir(parents=True)
        for n in range(per_class):
            pixels = np.clip(palette[label] + rng.normal(0, 20, size=(*size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class_{label}" / f"image_{n}.png")
    return root


BAD_IMAGES = ("truncated", "empty", "random bytes", "bomb")  # files that do not decode, each its own way
ODD_IMAGES = ("grayscale", "cmyk", "tiny")  # files that decode but are converted on the way


def make_bad_image(path: Path, kind: str) -> Path:
    """One image file of `kind` (BAD_IMAGES or ODD_IMAGES) at path; returns the path."""
    import struct
    import zlib

    rng = np.random.default_rng(len(kind))
    colour = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    if kind == "truncated":  # the header reads, the pixels stop half way: found only by decoding
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(path, format="JPEG")
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random bytes":
        path.write_bytes(rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())
    elif kind == "bomb":  # a 14000x14000 PNG of 30 kB: more than twice PIL's pixel limit
        def chunk(tag: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
        header = struct.pack(">IIBBBBB", 14000, 14000, 1, 0, 0, 0, 0)
        rows = zlib.compress(bytes(14000 * (1 + 14000 // 8)), 9)
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    elif kind == "grayscale":
        Image.fromarray(colour[..., 0]).save(path, format="JPEG")
    elif kind == "cmyk":
        Image.fromarray(colour).convert("CMYK").save(path, format="JPEG")
    elif kind == "tiny":
        Image.fromarray(colour[:3, :3]).save(path, format="PNG")
    else:
        raise ValueError(kind)
    return path


def one_and_two_processes(workdir: Path, settings: list[str], micro_batch: int) -> tuple[Path, Path]:
    """The same run in one process (micro-batches of micro_batch) and under torchrun in two (half each)."""
    single = run_cli([*settings, f"trainer.micro_batch_size={micro_batch}", f"hydra.run.dir={workdir / 'one'}"],
                     cwd=workdir)
    assert single.returncode == 0, single.stdout[-2000:]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "runner", *settings,
               f"trainer.micro_batch_size={micro_batch // 2}", f"hydra.run.dir={workdir / 'two'}"]
    double = subprocess.run(command, cwd=workdir, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert double.returncode == 0, double.stdout[-2000:] + double.stderr[-2000:]
    return workdir / "one", workdir / "two"


def assert_close_weights(a: dict, b: dict) -> None:
    """Two state dicts equal to float rounding (sums taken in another order)."""
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server's URL: .ci/run starts one; else the project's script starts one here."""
    url = os.environ.get("RUNNER_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    script = PROJECT / "scripts" / "postgres_test_server.sh"
    started = subprocess.run([str(script), "start"], capture_output=True, text=True)
    if started.returncode != 0:
        pytest.skip(f"no PostgreSQL server could be started here: {started.stderr.strip()[-300:]}")
    yield started.stdout.strip()
    subprocess.run([str(script), "stop"], capture_output=True)


@pytest.fixture
def fresh_postgres_url(postgres_url):
    """A new, empty database on that server (no Optuna tables yet), dropped afterwards."""
    import sqlalchemy

    name = f"fresh_{os.getpid()}_{time.time_ns()}"
    server = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    yield sqlalchemy.make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    with server.connect() as connection:
        connection.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    server.dispose()


def stop_at_step(monkeypatch, step: int) -> None:
    """A stop signal arrives during update `step` (the loop checkpoints mid-epoch after it and raises Preempted)."""
    from runner.common import stop_signals
    from runner.training import loop

    real = loop.train_step

    def train_step(run, *args, **kwargs):
        update = real(run, *args, **kwargs)
        if run.global_step == step:
            stop_signals._request.received = "SIGUSR1"
        return update
    monkeypatch.setattr(loop, "train_step", train_step)
    monkeypatch.setattr(stop_signals._request, "received", None)


def refused_in_one_line(argv: list[str], capsys, config_name: str = "train", check=None) -> str:
    """The command line refused before Hydra makes a run folder: exit 2 and one ERROR line, no traceback; the line."""
    from runner.config.precheck import refuse_bad_command_line
    from runner.config.schema import validate

    with pytest.raises(SystemExit) as stopped:
        refuse_bad_command_line(config_name, check or validate, argv)
    assert stopped.value.code == 2
    output = capsys.readouterr()
    lines = [line for line in output.out.splitlines() if line.strip()]
    assert len(lines) == 1 and " ERROR " in lines[0] and "Traceback" not in output.out + output.err, output
    return lines[0]
