"""Weights that reach an offline node: `python -m runner.fetch_weights` fills RUNNER_WEIGHTS on a machine with
internet, a job without internet trains from that folder, and run.json says which weights it started from.

Never the network: the "hub" is tests/fake_hub.py on 127.0.0.1 serving a file made here from a timm model
built with pretrained=False; "no internet" is a local port where nothing listens.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY, cli_env, compose_config, run_cli
from tests.fake_hub import closed_endpoint, serving

TIMM_NAME = "test_convnext.r160_in1k"  # timm's tiny test architecture (200k parameters); hub id timm/<name>
TIMM_MODEL = ["model=timm", f"model.name={TIMM_NAME}"]
# one tiny epoch: 20 synthetic 32x32 images, 5 classes, two updates
TINY_JOB = [
    "dataset=synthetic", "dataset.num_classes=5", "dataset.image_size=[32,32]", "dataset.channels=3",
    "dataset.train_size=20", "dataset.val_size=10", "dataset.test_size=10",
    "trainer.epochs=1", "trainer.batch_size=10", "trainer.micro_batch_size=10", "evaluate.after_training=false",
]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory) -> Path:
    """The 'published' weights: test_convnext with its 1000-class ImageNet head, random, as safetensors."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(TIMM_NAME, pretrained=False)
    path = tmp_path_factory.mktemp("published") / "model.safetensors"
    save_file(model.state_dict(), str(path))
    return path


def command(module: str, args: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` in cwd with extra environment variables (run_cli's environment otherwise)."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**cli_env(), **env})


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if " ERROR " in line]


@pytest.mark.slow
def test_fetched_weights_reach_a_job_without_internet(tmp_path, timm_weights):
    shared, login, node = tmp_path / "shared-weights", tmp_path / "login", tmp_path / "node"
    login.mkdir(), node.mkdir()
    with serving({f"timm/{TIMM_NAME}": {"model.safetensors": timm_weights}}) as hub:
        fetched = command("runner.fetch_weights", [*TIMM_MODEL, "model.pretrained=true"], login,
                          RUNNER_WEIGHTS=str(shared), HF_ENDPOINT=hub)
    shown = fetched.stdout + fetched.stderr
    assert fetched.returncode == 0, shown[-3000:]
    # the hub cache keeps the file once, as a blob (snapshots/ hold links to it)
    cached = [path for path in shared.rglob("*")
              if path.is_file() and not path.is_symlink() and sha256(path) == sha256(timm_weights)]
    assert len(cached) == 1, sorted(str(p.relative_to(shared)) for p in shared.rglob("*"))
    assert sha256(timm_weights) in fetched.stdout and str(cached[0].resolve()) in fetched.stdout, shown[-3000:]
    assert f"export RUNNER_WEIGHTS={shared.resolve()}" in fetched.stdout.splitlines(), shown[-3000:]
    assert "export HF_HUB_OFFLINE=1" in fetched.stdout.splitlines(), shown[-3000:]
    assert not list(login.iterdir()), "the fetch wrote into its working folder"

    # the compute node: no internet (a refused port, and huggingface_hub told so), only the shared folder
    run_dir = node / "run"
    trained = command("runner", [*TIMM_MODEL, "model.pretrained=true", *TINY_JOB, f"hydra.run.dir={run_dir}"], node,
                      RUNNER_WEIGHTS=str(shared), HF_ENDPOINT=closed_endpoint(), HF_HUB_OFFLINE="1")
    assert trained.returncode == 0, (trained.stdout + trained.stderr)[-3000:]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["weights"]["sha256"] == sha256(timm_weights)
    assert Path(record["weights"]["file"]) == cached[0].resolve()
    assert TIMM_NAME in record["weights"]["name"]
    assert (run_dir / "checkpoints").is_dir()


@pytest.mark.slow
def test_a_job_without_internet_or_fetched_weights_stops_before_training_in_one_line(tmp_path):
    empty = tmp_path / "weights"
    run_dir = tmp_path / "run"
    # HF_HUB_OFFLINE=1, as runner.fetch_weights tells the job: without it huggingface_hub retries each file
    # for about 25 s (1+2+4+8+8 s of backoff, two file names) before it gives up on an empty cache
    result = command("runner", [*TIMM_MODEL, "model.pretrained=true", *TINY_JOB, f"hydra.run.dir={run_dir}"],
                     tmp_path, RUNNER_WEIGHTS=str(empty), HF_ENDPOINT=closed_endpoint(), HF_HUB_OFFLINE="1")
    shown = result.stdout + result.stderr
    assert result.returncode == 2, shown[-3000:]
    errors = error_lines(result)
    assert len(errors) == 1 and "Traceback" not in shown, shown[-3000:]
    assert TIMM_NAME in errors[0] and str(empty.resolve()) in errors[0], errors[0]
    # the very command the first test fetches with (model.pretrained=false, timm's default, has nothing to fetch)
    assert f"python -m runner.fetch_weights model=timm model.name={TIMM_NAME} model.pretrained=true" in errors[0]
    assert not run_dir.exists(), sorted(str(p) for p in run_dir.rglob("*"))


@pytest.mark.slow
def test_a_model_without_pretrained_weights_has_nothing_to_fetch(tmp_path):
    result = run_cli(["model=mlp"], tmp_path, module="runner.fetch_weights")
    shown = result.stdout + result.stderr
    assert result.returncode == 2, shown[-3000:]
    errors = error_lines(result)
    assert len(errors) == 1 and "nothing to fetch" in errors[0] and "Fix: " in errors[0], shown[-3000:]
    assert not list(tmp_path.iterdir()), "a refused fetch wrote something"


@pytest.mark.parametrize(("settings", "expected"), [
    ([*TIMM_MODEL, "model.pretrained=false"], "model.pretrained=false"),
    ([*TIMM_MODEL, "model.weights_path=/somewhere/model.safetensors"], "model.weights_path="),
    (["model=convnet"], "model convnet"),
])
def test_nothing_to_fetch_names_the_setting_and_the_fix(settings, expected):
    from runner.cli.fetch_weights import refuse_nothing_to_fetch
    from runner.common.errors import UserError

    with pytest.raises(UserError, match="nothing to fetch") as refused:
        refuse_nothing_to_fetch(compose_config(settings).model)
    assert expected in str(refused.value) and "Fix: " in str(refused.value)


def test_torchvision_weights_land_in_runner_weights(tmp_path, monkeypatch, capsys):
    """torch hub's download, replaced by a copy of a file made here, lands in RUNNER_WEIGHTS/torch."""
    import torchvision
    from huggingface_hub import constants

    from runner.cli.fetch_weights import fetch

    published = tmp_path / "published.pth"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), published)
    downloads = []

    def download(url, destination, *args, **kwargs):
        downloads.append(url)
        Path(destination).write_bytes(published.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    shared = tmp_path / "shared"
    monkeypatch.setenv("RUNNER_WEIGHTS", str(shared))
    for name in ("TORCH_HOME", "HF_HUB_CACHE"):  # use_weights_home points these into RUNNER_WEIGHTS: undo after
        monkeypatch.delenv(name, raising=False)
    for name in ("HF_HUB_CACHE", "HF_HUB_OFFLINE"):  # and the constants huggingface_hub read at its import
        monkeypatch.setattr(constants, name, getattr(constants, name))
    record = fetch(compose_config(["model=torchvision", "model.name=mobilenet_v3_small",
                                   "model.weights=IMAGENET1K_V1", *TINY_JOB]))
    assert len(downloads) == 1
    assert Path(record["file"]).parent == (shared / "torch" / "hub" / "checkpoints").resolve()
    assert record["sha256"] == sha256(published)
    assert f"export RUNNER_WEIGHTS={shared.resolve()}" in capsys.readouterr().out.splitlines()


@pytest.mark.slow
def test_a_run_from_a_weights_file_records_it_and_the_runs_table_reads_it(tmp_path, timm_weights, monkeypatch):
    from runner.evaluation.run_table import table
    from runner.run import train_and_evaluate

    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "outputs" / "from-file"
    train_and_evaluate(compose_config([*TIMM_MODEL, f"model.weights_path={timm_weights}", *TINY_JOB]), run_dir)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["weights"]["source"] == "file"
    assert record["weights"]["sha256"] == sha256(timm_weights)
    assert Path(record["weights"]["file"]) == timm_weights.resolve()
    rows = table(tmp_path / "outputs")
    assert [row["status"] for row in rows] == ["finished"]


def test_a_model_from_scratch_records_no_weights(tmp_path, monkeypatch):
    from runner.run import train_and_evaluate

    monkeypatch.chdir(tmp_path)
    train_and_evaluate(compose_config([*TINY, "trainer.epochs=1"]), tmp_path / "run")
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert "weights" in record and record["weights"] is None
