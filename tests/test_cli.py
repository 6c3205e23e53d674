"""The real command, end to end: the default run, the flowers experiment, help, bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests.conftest import cli_env, run_cli


def printed_run_dir(stdout: str) -> Path:
    return Path(re.search(r"^run directory: (.+)$", stdout, re.M).group(1))


@pytest.mark.slow
def test_default_command_trains_on_digits_and_says_where_everything_is(workdir):
    result = run_cli([], cwd=workdir)
    assert result.returncode == 0, result.stderr
    run_dir = printed_run_dir(result.stdout)
    assert run_dir.parent == workdir / "outputs" / "default"
    assert f"checkpoints:   {run_dir / 'checkpoints'}" in result.stdout
    assert f"TensorBoard:   tensorboard --logdir {run_dir / 'tb'}" in result.stdout
    assert "not inside a git repository" in result.stdout  # a warning, not a crash

    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "train.log", "run.json",
                 "checkpoints/epoch-0020.pt"):
        assert (run_dir / name).is_file(), name
    log = (run_dir / "train.log").read_text()
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} INFO", log, re.M)  # millisecond stamps
    assert "resolved config:" in log and "command-line overrides: (none)" in log
    assert "sweep:" in log and "sweep:" not in result.stdout  # the whole config in the log, not on the terminal
    assert "resolved config: in train.log and .hydra/config.yaml" in result.stdout
    assert re.search(r"run: dataset digits \(10 classes, 8x8\), model mlp, optimizer adamw \(lr 0.0003\), "
                     r"schedule constant, loss cross_entropy, 20 epochs, learning batch 64 \(micro-batch 64\)",
                     result.stdout), result.stdout[:3000]
    epochs = re.findall(r"epoch (\d+)/20: loss ([\d.]+), accuracy ([\d.]+)%", log)
    assert len(epochs) == 20 and float(epochs[-1][1]) < 0.3 < float(epochs[0][1])
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"

    # training ends with the offline evaluator: the validation table and the best checkpoint
    assert "val split (best by top1 marked *):" in result.stdout
    best = json.loads((run_dir / "eval" / "best.json").read_text())
    assert f"best:          {best['checkpoint']} (top1 {best['value']:.4f} on val)" in result.stdout
    assert best["value"] > 0.9  # digits with an MLP: well above chance
    assert (run_dir / "eval" / "gallery_max.png").is_file()

    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/accuracy", "train/lr", "train/grad_norm", "train/images_per_s",
            "train/data_wait_fraction", "eval/val/top1", "eval/val/loss"} <= scalars
    assert "train/first_batch" in events.Tags()["images"]
    losses = [event.value for event in events.Scalars("train/loss")]
    assert losses[-1] < losses[0]
    start = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    assert set(start.hparams) == {"trainer.seed"}  # no override on the command line: only the seed varies
    summary = EventAccumulator(str(run_dir.parent / "hparams"))  # one experiment summary per folder of runs
    summary.Reload()
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        summary.PluginTagToContent("hparams")["_hparams_/experiment"]).experiment
    assert "hparams/val_top1" in {m.name.tag for m in experiment.metric_infos}


@pytest.mark.slow
def test_flowers_experiment_end_to_end_on_the_fixture(workdir, flowers_root):
    result = run_cli(["+experiment=flowers", f"dataset.root={flowers_root}", "dataset.download=false",
                      "dataset.subset=24", "trainer.epochs=2", "trainer.batch_size=12", "trainer.micro_batch_size=6",
                      "model.channels=8", "checkpoint.every_epochs=1"], cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = printed_run_dir(result.stdout)
    assert run_dir.parent == workdir / "outputs" / "flowers"
    assert (run_dir / "checkpoints" / "epoch-0002.pt").is_file()
    assert "dataset flowers102: train 24, val 24, test 24" in result.stdout
    assert "2 micro-batches of 6" in result.stdout


@pytest.mark.slow
def test_flowers_without_data_stops_with_one_clear_message(workdir):
    result = run_cli(["+experiment=flowers", "dataset.download=false"], cwd=workdir)
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert f"Flowers-102 not found in {Path('data') / 'flowers-102'}" in output
    assert "imagelabels.mat, setid.mat and jpg/" in output


@pytest.mark.slow
@pytest.mark.parametrize(("args", "expected"), [
    (["trainer.batch_size=100", "trainer.micro_batch_size=32"],
     "trainer.batch_size=100 is not a multiple of trainer.micro_batch_size=32"),
    (["optimizer.lr=-1"], "optimizer.lr=-1 must be a number > 0. Fix:"),
])
def test_bad_values_exit_non_zero_with_one_line(workdir, args, expected):
    result = run_cli(args, cwd=workdir)
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and expected in errors[0], result.stdout


@pytest.mark.slow
def test_unknown_model_lists_the_options(workdir):
    result = run_cli(["model=transformer"], cwd=workdir)
    assert result.returncode != 0
    output = result.stdout + result.stderr  # one line on stdout now, like every refused setting
    assert "Could not find 'model/transformer'" in output and "convnet" in output


@pytest.mark.slow
def test_help_and_cfg_job_show_the_composed_config(workdir):
    shown = run_cli(["--cfg", "job", "optimizer=sgd", "optimizer.lr=0.1", "schedule=warmup_cosine"], cwd=workdir)
    assert shown.returncode == 0
    assert "_target_: torch.optim.SGD" in shown.stdout and "lr: 0.1" in shown.stdout
    assert "runner.training.optim.warmup_cosine" in shown.stdout
    assert not (workdir / "outputs").exists()  # printing the config does no work
    helped = run_cli(["--help"], cwd=workdir)
    assert helped.returncode == 0
    assert "python -m runner +experiment=flowers" in helped.stdout
    assert "model: convnet, lenet, linear, mlp, resnet18, resnet50" in helped.stdout


@pytest.mark.slow
def test_the_evaluate_command(workdir):
    trained = run_cli(["trainer.epochs=2", "checkpoint.every_epochs=1", "evaluate.after_training=false"], cwd=workdir)
    run_dir = printed_run_dir(trained.stdout)
    assert not (run_dir / "eval").exists()
    result = run_cli([f"run_dir={run_dir}"], cwd=workdir, module="runner.evaluate")
    assert result.returncode == 0, result.stderr
    table = result.stdout[result.stdout.index("val split"):].splitlines()
    assert table[1].split() == ["checkpoint", "epoch", "loss", "xentropy", "top-1", "top-5", "bal.acc"]
    assert [line.split()[-6] for line in table[2:]] == ["1", "2"]
    assert (run_dir / "eval" / "evaluate.log").read_text().count("on val: loss") == 2

    missing = run_cli(["run_dir=no/such/run"], cwd=workdir, module="runner.evaluate")
    assert missing.returncode == 2 and "Traceback" not in missing.stdout + missing.stderr
    assert "run_dir=no/such/run is not a run directory" in missing.stdout


@pytest.mark.slow
def test_multirun_through_the_local_submitit_launcher(workdir):
    result = run_cli(["-m", "hydra/launcher=local", "trainer.seed=0,1", "trainer.epochs=1", "evaluate.galleries=false"],
                     cwd=workdir)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = sorted(workdir.glob("outputs/default/multirun_*/[01]/run.json"))
    assert len(runs) == 2 and all(json.loads(r.read_text())["status"] == "finished" for r in runs)


@pytest.mark.slow
def test_a_corrupted_image_stops_training_with_one_line_also_from_a_loader_worker(workdir):
    import numpy as np
    from PIL import Image

    for c in range(2):
        (workdir / "images" / f"c{c}").mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((10, 12, 3), 40 * i, np.uint8)).save(workdir / "images" / f"c{c}" / f"{i}.jpg")
    good = (workdir / "images" / "c0" / "0.jpg").read_bytes()
    (workdir / "images" / "c1" / "broken.jpg").write_bytes(good[: len(good) // 3])
    result = run_cli(["dataset=imagefolder", "dataset.root=images", "dataset.num_classes=2", "dataset.image_size=[8,8]",
                      "trainer.num_workers=2", "trainer.epochs=1"], cwd=workdir)
    assert result.returncode == 2
    errors = [line for line in result.stdout.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "images/c1/broken.jpg cannot be decoded as an image" in errors[0], result.stdout[-2000:]
    assert "Traceback" not in result.stdout + result.stderr


def console_scripts() -> list[str]:
    """pyproject's [project.scripts]: every installed command, so that a new one is tested as it is added."""
    import tomllib

    return sorted(tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["scripts"])


def module_of(command: str) -> str:
    """runner-inspect-data -> runner.inspect_data: the `python -m` twin of a console command."""
    package, _, name = command.partition("-")
    return f"{package}.{name.replace('-', '_')}" if name else package



@pytest.mark.parametrize("how", ["console script", "python -m"])
@pytest.mark.parametrize("command", console_scripts())
def test_every_command_answers_help_with_its_own_usage(command, how, tmp_path):
    module = module_of(command)
    if how == "console script":
        assert shutil.which(command), f"console command {command} not installed: run pip install -e ."
    argv = [command] if how == "console script" else [sys.executable, "-m", module]
    shown = subprocess.run([*argv, "--help"], cwd=tmp_path, capture_output=True, text=True, env=cli_env(), timeout=120)
    assert shown.returncode == 0, shown.stdout[-300:] + shown.stderr[-500:]
    first = shown.stdout.partition("\n")[0]
    assert first.startswith(f"{module}: "), f"{' '.join(argv)} --help begins {first!r}, not with its own name"
    assert f"\npython -m {module} " in shown.stdout, shown.stdout[:500]
    assert not list(tmp_path.iterdir()), "asking for help made a folder"


def test_the_training_help_lists_every_installed_command(tmp_path):
    shown = run_cli(["--help"], cwd=tmp_path)
    header = shown.stdout[: shown.stdout.index("== Configuration groups ==")]
    listed = set(re.findall(r"(?<![\w.-])runner(?:-[a-z]+)*(?![\w.-])", header))
    assert set(console_scripts()) - listed == set(), header


def complete(line: str, cwd: Path, profile_imports: bool = False) -> subprocess.CompletedProcess:
    """What bash's completion function asks the command for when Tab is pressed after `line`."""
    env = {**cli_env(), "COMP_LINE": line, "COMP_POINT": str(len(line))}
    if profile_imports:
        env["PYTHONPROFILEIMPORTTIME"] = "1"  # every import on stderr: the real command, untouched
    return subprocess.run([line.split()[0], "-sc", "query=bash"], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=120)


def test_the_runner_console_commands_complete_in_bash(tmp_path):
    assert "optimizer=" in complete("runner optim", tmp_path).stdout.split()
    assert "trainer.micro_batch_size=" in complete("runner trainer.mi", tmp_path).stdout.split()
    assert "split=" in complete("runner-evaluate spl", tmp_path).stdout.split()
    installed = subprocess.run(["runner", "-sc", "install=bash"], cwd=tmp_path, capture_output=True, text=True, env=cli_env())
    assert installed.stdout.rstrip().endswith("hydra_bash_completion runner")
    assert not list(tmp_path.glob("outputs")), "asking for completion made a run directory"


@pytest.mark.parametrize(("line", "offered"), [
    ("runner dataset.sub", "dataset.subset="), ("runner-evaluate spl", "split="),
    ("runner-check dataset.sub", "dataset.subset="), ("runner-inspect-data dataset.sub", "dataset.subset="),
    ("runner-lr-find lr_find.st", "lr_find.steps="),
])
def test_tab_completion_does_not_import_torch(line, offered, tmp_path):
    """torch takes seconds to import, and each Tab runs the command once."""
    completed = complete(line, tmp_path, profile_imports=True)
    assert offered in completed.stdout.split(), completed.stdout[-300:]
    imported = {row.rpartition("|")[2].strip() for row in completed.stderr.splitlines() if row.startswith("import time:")}
    assert "hydra" in imported, "no import was profiled: the check would see nothing"
    assert "torch" not in imported, f"{line.split()[0]} imports torch on the completion path"


FIRST_LINE_PROBE = """
import logging, os, runpy, sys

make_record = logging.getLogRecordFactory()

def first_record(*args, **kwargs):  # Hydra's logging setup replaces handlers, not the record factory
    record = make_record(*args, **kwargs)
    if record.name.startswith("runner"):
        print(f"torch imported: {'torch' in sys.modules}; first line: {record.getMessage()}", flush=True)
        os._exit(0)
    return record

logging.setLogRecordFactory(first_record)
sys.argv = ["runner", *sys.argv[1:]]
runpy.run_module("runner", run_name="__main__", alter_sys=True)  # as python -m runner does
"""


def test_the_first_log_line_is_written_before_torch_is_imported(tmp_path):
    """The first line says at once where the run goes; torch alone takes seconds to import."""
    probe = subprocess.run([sys.executable, "-c", FIRST_LINE_PROBE], cwd=tmp_path, capture_output=True, text=True,
                           env=cli_env(), timeout=120)
    assert "first line: run directory" in probe.stdout, probe.stdout[-500:] + probe.stderr[-1000:]
    assert "torch imported: False" in probe.stdout, probe.stdout


def test_the_dataset_names_checked_before_the_first_line_are_the_builders():
    from runner.data.datasets import DATASETS
    from runner.data.settings import DATASET_NAMES

    assert list(DATASET_NAMES) == list(DATASETS)


def test_a_bad_target_argument_is_refused_after_the_first_lines_and_leaves_no_run_folder(tmp_path):
    """The `_target_` callables are checked after the first log line (importing them imports torch)."""
    run_dir = tmp_path / "outputs" / "run"
    result = run_cli(["+optimizer.momentum=0.9", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    errors = [line for line in result.stdout.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "optimizer.momentum=0.9 is not an argument of torch.optim.AdamW. Fix:" in errors[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not run_dir.exists()
