"""Every file a command reads from a run folder, malformed every way its schema allows (issue 21, item 15).

The table of (file, corruption) pairs is generated: whole-file damage for each kind of file
(JSON, JSON lines, YAML, torch), and for the JSON files one wrong-typed value per field and one
missing required field, from the schemas the commands check them against
(runner/evaluation/records.py), as the settings table is generated from the settings schemas.
Each pair is applied to a copy of one real small run folder and every command that reads that
file is run on it: it either refuses in one line naming the file (exit 2) or goes on with a
warning naming it; never a traceback, never a logging error.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from runner.common.errors import UserError, one_line
from runner.config.schema import validate_evaluate_command
from runner.evaluation import records
from tests.conftest import TINY, compose_config, run_cli

pytestmark = pytest.mark.faults

RUN_SETTINGS = [*TINY, "model=linear", "evaluate.after_training=true", "evaluate.galleries=false"]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """One run as `python -m runner` leaves it (.hydra/, run.json, tb/, two checkpoints), evaluated, looked at on
    test, and evaluated with tta=flip too (eval/best.tta-flip.json beside best.json)."""
    root = tmp_path_factory.mktemp("malformed")
    run_dir = root / "run"
    finished = run_cli([*RUN_SETTINGS, f"hydra.run.dir={run_dir}"], cwd=root)
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]
    from runner.cli.evaluate import evaluate

    evaluate(compose_config([f"run_dir={run_dir}", "split=test", "galleries=false"], config_name="evaluate"))
    evaluate(compose_config([f"run_dir={run_dir}", "tta=flip", "galleries=false"], config_name="evaluate"))
    assert (run_dir / "eval" / "best.tta-flip.json").is_file()
    return run_dir


# ---------------------------------------------------------------------------------------------
# the corruptions


WRONG_VALUES = [12345, "text", ["x"], {"x": 1}, True]


def wrong_value(kinds: tuple[str, ...]):
    return next(v for v in WRONG_VALUES if not any(records.is_kind(v, kind) for kind in kinds))


def with_field(record: dict, field: str, value) -> dict:
    """A copy of record with the dotted field set to value (missing: removed); parents made as needed."""
    record = json.loads(json.dumps(record))
    *parents, leaf = field.split(".")
    node = record
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    if value is MISSING:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return record


MISSING = object()

WHOLE_JSON = {
    "torn": lambda text: text[: len(text) // 2],
    "empty": lambda text: "",
    "a list": lambda text: json.dumps([json.loads(text)]),
    "a string": lambda text: json.dumps("finished"),
    "a number": lambda text: "3",
    "null": lambda text: "null",
}
WHOLE_JSONL = {
    "a torn last line": lambda lines: [*lines[:-1], lines[-1][: len(lines[-1]) // 2]],
    "a list line": lambda lines: [*lines, json.dumps([1, 2])],
    "a string line": lambda lines: [*lines, json.dumps("row")],
    "a null line": lambda lines: [*lines, "null"],
    "not text": lambda lines: [*lines, "\x00\x01\x02"],
}
WHOLE_YAML = {
    "not YAML": "name: [unclosed\n",
    "a list": "- 1\n- 2\n",
    "a string": "just words\n",
    "tabs": "name:\tx\n\ttrainer: 1\n",
}


def json_object_cases(file: str, schema: records.Schema) -> list[tuple[str, str, Callable]]:
    cases = [(file, name, lambda path, f=f: path.write_text(f(path.read_text()))) for name, f in WHOLE_JSON.items()]
    for field, (kinds, required) in schema.items():
        value = wrong_value(kinds)
        cases.append((file, f"{field}={json.dumps(value)}", lambda path, field=field, value=value: path.write_text(
            json.dumps(with_field(json.loads(path.read_text()), field, value)))))
        if required:
            cases.append((file, f"no {field}", lambda path, field=field: path.write_text(
                json.dumps(with_field(json.loads(path.read_text()), field, MISSING)))))
    return cases


def json_lines_cases(file: str, schema: records.Schema) -> list[tuple[str, str, Callable]]:
    def rewrite(path: Path, change: Callable[[list[str]], list[str]]) -> None:
        path.write_text("\n".join(change(path.read_text().splitlines())) + "\n")

    cases = [(file, name, lambda path, f=f: rewrite(path, f)) for name, f in WHOLE_JSONL.items()]
    for field, (kinds, required) in schema.items():
        value = wrong_value(kinds)
        cases.append((file, f"{field}={json.dumps(value)}", lambda path, field=field, value=value: rewrite(
            path, lambda lines: [*lines[:-1], json.dumps(with_field(json.loads(lines[-1]), field, value))])))
        if required:
            cases.append((file, f"no {field}", lambda path, field=field: rewrite(
                path, lambda lines: [*lines[:-1], json.dumps(with_field(json.loads(lines[-1]), field, MISSING))])))
    return cases


def yaml_cases(file: str, schema: records.Schema) -> list[tuple[str, str, Callable]]:
    cases = [(file, name, lambda path, text=text: path.write_text(text)) for name, text in WHOLE_YAML.items()]
    for field, (kinds, _) in schema.items():
        value = wrong_value(kinds)

        def change(path: Path, field=field, value=value) -> None:
            import yaml

            path.write_text(yaml.safe_dump(with_field(yaml.safe_load(path.read_text()) or {}, field, value)))
        cases.append((file, f"{field}={json.dumps(value)}", change))
    return cases


def resave(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def corrupt(path: Path) -> None:
        state = torch.load(path, weights_only=True)
        torch.save(change(state), path)
    return corrupt


def meta_weights(state: dict) -> dict:
    state["model"] = {key: torch.empty_like(value, device="meta") for key, value in state["model"].items()}
    return state


class Pickled:  # any object: torch.load(weights_only=True) refuses to build it
    pass


def edited(path: str, value) -> Callable[[dict], dict]:
    def change(state: dict) -> dict:
        return with_state(state, path, value)
    return change


def with_state(state: dict, path: str, value) -> dict:
    *parents, leaf = path.split(".")
    node = state
    for part in parents:
        node = node[part]
    if value is MISSING:
        del node[leaf]
    else:
        node[leaf] = value
    return state


CHECKPOINT = {
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:500]),
    "not a checkpoint": lambda path: path.write_bytes(b"a text file, not a checkpoint"),
    "a pickle": lambda path: torch.save({"format_version": 1, "epoch": Pickled()}, path),
    "a list": resave(lambda state: [state]),
    "no format_version": resave(edited("format_version", MISSING)),
    "weights on meta": resave(meta_weights),
    "epoch a string": resave(edited("epoch", "2")),
    "global_step a float": resave(edited("global_step", 6.5)),
    "model a list": resave(edited("model", [1, 2])),
    "model holding a string": resave(lambda state: {**state, "model": {**state["model"], "extra": "text"}}),
    "no model": resave(edited("model", MISSING)),
    "config a list": resave(edited("config", [1])),
    "config.model a string": resave(edited("config.model", "linear")),
    "an extra key in config.model": resave(edited("config.model.colour", "red")),
    "config.model._target_ a number": resave(edited("config.model._target_", 3)),
    "no config.trainer": resave(edited("config.trainer", MISSING)),
    "no config.dataset": resave(edited("config.dataset", MISSING)),
}


def saved_predictions(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def corrupt(path: Path) -> None:
        torch.save(change(torch.load(path, weights_only=True)), path)
    return corrupt


PREDICTIONS = {
    "missing": lambda path: path.unlink(),
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:100]),
    "a pickle": lambda path: torch.save({"log_probabilities": Pickled()}, path),
    "a list": saved_predictions(lambda saved: [saved]),
    "no labels": saved_predictions(lambda saved: {"log_probabilities": saved["log_probabilities"]}),
    "labels of another length": saved_predictions(lambda saved: {**saved, "labels": saved["labels"][:-1]}),
    "log-probabilities of one dimension": saved_predictions(
        lambda saved: {**saved, "log_probabilities": saved["log_probabilities"][:, 0]}),
    "labels as floats": saved_predictions(lambda saved: {**saved, "labels": saved["labels"].float()}),
}

DATASET_CONFIG = {  # what the evaluator builds the split from: one line, an error for the whole run
    "config.dataset.name unknown": resave(edited("config.dataset.name", "nosuch")),
    "config.dataset.image_size a string": resave(edited("config.dataset.image_size", "x")),
    "config.dataset without mean": resave(edited("config.dataset.mean", MISSING)),
    "config.dataset.num_classes a string": resave(edited("config.dataset.num_classes", "7")),
}

BEST_CHECKPOINT = "the best checkpoint"  # resolved per run: the checkpoint best.json names
BEST_DATASET = "the best checkpoint's saved dataset config"
BEST_PREDICTIONS = "the best checkpoint's predictions"

CASES = [
    *json_object_cases("run.json", records.RUN_RECORD),
    *json_object_cases("eval/best.json", records.BEST),
    *json_object_cases("eval/best.tta-flip.json", records.BEST),
    ("eval/best.json", "naming a checkpoint outside the run",
     lambda path: path.write_text(json.dumps({**json.loads(path.read_text()), "checkpoint": "/elsewhere/epoch-0001.pt"}))),
    ("eval/best.json", "naming a checkpoint through ..",
     lambda path: path.write_text(json.dumps({**json.loads(path.read_text()),
                                              "checkpoint": "../other/checkpoints/epoch-0001.pt"}))),
    *json_lines_cases("eval/metrics.jsonl", records.ROW),
    *json_lines_cases("eval/test_ledger.jsonl", records.LOOK),
    *yaml_cases(".hydra/config.yaml", records.HYDRA_CONFIG),
    *yaml_cases(".hydra/hydra.yaml", records.HYDRA_SETTINGS),
    *[(BEST_CHECKPOINT, name, corrupt) for name, corrupt in CHECKPOINT.items()],
    *[(BEST_DATASET, name, corrupt) for name, corrupt in DATASET_CONFIG.items()],
    *[(BEST_PREDICTIONS, name, corrupt) for name, corrupt in PREDICTIONS.items()],
    ("eval/predictions", "missing (a copied run)", lambda path: shutil.rmtree(path)),
    ("tb", "unreadable event files", lambda path: [p.write_bytes(b"\x00garbage") for p in path.iterdir()]),
]

# which commands read which file
READERS = {
    "run.json": ["runs", "compare", "watch"],
    "eval/best.json": ["runs", "compare", "evaluate"],
    "eval/best.tta-flip.json": ["runs"],
    "eval/metrics.jsonl": ["evaluate", "compare"],
    "eval/test_ledger.jsonl": ["test"],
    ".hydra/config.yaml": ["runs", "compare"],
    ".hydra/hydra.yaml": ["runs"],
    BEST_CHECKPOINT: ["fresh", "checkpoint", "resume"],
    BEST_DATASET: ["fresh", "checkpoint"],  # resume= compares it with today's config (runner/training)
    BEST_PREDICTIONS: ["compare", "ensemble"],
    "eval/predictions": ["compare", "evaluate"],
    "tb": ["compare"],
}


def test_the_table_covers_every_file_each_command_reads():
    assert {file for file, _, _ in CASES} == set(READERS)
    assert len(CASES) >= 100


# ---------------------------------------------------------------------------------------------
# running the commands


@pytest.fixture(autouse=True)
def quick_figures(monkeypatch):
    """compare's figures are drawn but not rendered to PNG: the files they are drawn from are what is tested."""
    import matplotlib.pyplot as plt

    from runner.evaluation import comparison as compare

    monkeypatch.setattr(compare, "save_png", lambda figure, path: (plt.close(figure), Path(path).write_bytes(b"png")))


def run(command: str, run_dir: Path, twin: Path, tmp_path: Path, target: Path) -> int:
    """The command, in this process as its entry point runs it; its exit status."""
    from runner.cli.evaluate import evaluate
    from runner.compare import cli as compare_cli
    from runner.run import train_and_evaluate
    from runner.runs import cli as runs_cli

    def evaluator(*settings: str) -> None:
        chosen = compose_config(["galleries=false", *settings], config_name="evaluate")
        validate_evaluate_command(chosen)
        evaluate(chosen)

    try:
        if command == "runs":
            runs_cli([str(run_dir.parent)])
        elif command == "compare":
            compare_cli([str(run_dir), str(twin), f"out={tmp_path / 'report'}"])
        elif command == "evaluate":
            evaluator(f"run_dir={run_dir}")
        elif command == "test":
            evaluator(f"run_dir={run_dir}", "split=test")
        elif command == "watch":
            evaluator(f"run_dir={run_dir}", "watch=true", "poll_seconds=0.05", "idle_minutes=0.01")
        elif command == "ensemble":
            evaluator(f"run_dir={run_dir}", "ensemble_top_k=2")
        elif command == "fresh":
            shutil.rmtree(run_dir / "eval")
            evaluator(f"run_dir={run_dir}")
        elif command == "checkpoint":
            shutil.rmtree(run_dir / "eval")
            evaluator(f"checkpoint={target}")
        elif command == "resume":
            train_and_evaluate(compose_config([*RUN_SETTINGS, f"resume={target}"]), tmp_path / "resumed")
    except SystemExit as stopped:
        return stopped.code
    except UserError as error:
        print(one_line(error), file=sys.stderr)  # what the entry point prints
        return 2
    return 0


@pytest.mark.parametrize(("file", "corruption", "corrupt"), CASES, ids=[f"{f}: {c}" for f, c, _ in CASES])
def test_a_malformed_file_is_one_line_or_a_warning_naming_it(real_run, tmp_path, capsys, caplog, file, corruption,
                                                              corrupt):
    for command in READERS[file]:
        run_dir = Path(shutil.copytree(real_run, tmp_path / command / "runs" / "run"))
        twin = Path(shutil.copytree(real_run, tmp_path / command / "twin"))
        best = json.loads((real_run / "eval" / "best.json").read_text())
        target = {BEST_CHECKPOINT: run_dir / best["checkpoint"], BEST_DATASET: run_dir / best["checkpoint"],
                  BEST_PREDICTIONS: run_dir / "eval" / "predictions" / f"{Path(best['checkpoint']).stem}.val.pt"
                  }.get(file, run_dir / file)
        corrupt(target)
        capsys.readouterr()
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            code = run(command, run_dir, twin, tmp_path / command, target)
        captured = capsys.readouterr()
        said = captured.out + captured.err + caplog.text
        assert "Traceback" not in said and "Logging error" not in said, f"{command}: {said[-3000:]}"
        name = target.name
        if code == 2:
            errors = [line for line in captured.err.splitlines() if line.strip()]
            assert errors and name in errors[-1] and "Fix:" in errors[-1], f"{command}: {captured.err[-2000:]}"
        else:
            assert code == 0, f"{command}: exit {code}"
            warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
            warned += [line for line in captured.err.splitlines() if "warning" in line.lower()]
            assert any(name in message for message in warned), f"{command} said nothing about {name}: {said[-3000:]}"


# the real commands, end to end: what the user sees on the terminal
END_TO_END = [
    ("runs", "run.json", lambda path: path.write_text("[1, 2]"), lambda run, twin, target: (
        "runner.runs", [str(run.parent)], 0)),
    ("compare", "predictions", PREDICTIONS["a pickle"], lambda run, twin, target: (
        "runner.compare", [str(run), str(twin), f"out={run.parent.parent / 'report'}"], 2)),
    ("evaluate", "checkpoint", CHECKPOINT["weights on meta"], lambda run, twin, target: (
        "runner.evaluate", [f"run_dir={run}", "galleries=false"], 0)),
    ("resume", "checkpoint", CHECKPOINT["epoch a string"], lambda run, twin, target: (
        "runner", [*RUN_SETTINGS, f"resume={target}", f"hydra.run.dir={run.parent.parent / 'resumed'}"], 2)),
]


@pytest.mark.parametrize(("command", "file", "corrupt", "invocation"), END_TO_END, ids=[c for c, *_ in END_TO_END])
def test_the_real_command_says_one_line_naming_the_file(real_run, tmp_path, command, file, corrupt, invocation):
    run_dir = Path(shutil.copytree(real_run, tmp_path / "runs" / "run"))
    twin = Path(shutil.copytree(real_run, tmp_path / "twin"))
    best = json.loads((real_run / "eval" / "best.json").read_text())
    target = {"run.json": run_dir / "run.json", "checkpoint": run_dir / best["checkpoint"],
              "predictions": run_dir / "eval" / "predictions" / f"{Path(best['checkpoint']).stem}.val.pt"}[file]
    if command == "evaluate":
        shutil.rmtree(run_dir / "eval")
    corrupt(target)
    module, args, expected = invocation(run_dir, twin, target)
    result = run_cli(args, cwd=tmp_path, module=module)
    said = result.stdout + result.stderr
    assert result.returncode == expected, said[-3000:]
    assert "Traceback" not in said and "Logging error" not in said, said[-3000:]
    lines = [line for line in said.splitlines() if target.name in line]
    assert lines and all(len(line) < 600 for line in lines), said[-3000:]
    if expected == 2:
        assert "Fix:" in lines[-1], said[-3000:]
