"""The data flow's arrows are checked, not only drawn: `lint-imports` with pyproject's contracts."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                           "sys.exit(lint_imports_command())", "--no-cache"],
                          cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=300)


def test_the_package_keeps_its_import_contracts():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def copy_of_the_project(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "runner", tmp_path / "runner", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


@pytest.mark.parametrize(("module", "planted", "named"), [
    # the evaluator importing the trainer: against the flow
    ("runner/evaluation/metrics.py", "runner.training.loop", "runner.evaluation.metrics -> runner.training.loop"),
    # anything but the Hydra plugin importing the sweeper
    ("runner/run.py", "runner.sweep.study", "runner.run -> runner.sweep.study"),
    # a working module importing a command (runner/cli/ is above everything but the python -m entries)
    ("runner/run.py", "runner.cli.evaluate", "runner.run -> runner.cli.evaluate"),
    # metrics <- evaluator <- ensemble, and now metrics -> ensemble
    ("runner/evaluation/metrics.py", "runner.evaluation.ensemble", "No import cycles between modules or packages BROKEN"),
])
def test_a_planted_bad_import_is_caught_and_named(module, planted, named, tmp_path):
    """The check of the check: plant the import each contract forbids, and lint-imports names it."""
    root = copy_of_the_project(tmp_path)
    path = root / module
    path.write_text(path.read_text() + f"\nimport {planted}  # noqa\n")
    result = lint_imports(root)
    assert result.returncode != 0
    assert named in result.stdout, result.stdout


MAX_FUNCTION_LINES, MAX_MODULE_LINES = 60, 300


def sizes(root: Path) -> tuple[list[str], list[str]]:
    """Functions and modules of the package over the limits, as 'path:line name (N lines)'."""
    import ast

    long_functions, long_modules = [], []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text()
        lines = len(source.splitlines())
        if lines > MAX_MODULE_LINES:
            long_modules.append(f"{path.relative_to(root.parent)} ({lines} lines)")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({length} lines)")
    return long_functions, long_modules


def test_functions_and_modules_stay_short_enough_to_read_in_one_sitting():
    long_functions, long_modules = sizes(ROOT / "runner")
    assert long_functions == [], f"split these functions (at most {MAX_FUNCTION_LINES} lines): {long_functions}"
    assert long_modules == [], f"split these modules (at most {MAX_MODULE_LINES} lines): {long_modules}"


def test_a_long_function_is_caught(tmp_path):
    package = tmp_path / "runner"
    package.mkdir()
    (package / "long.py").write_text("def long():\n" + "    x = 1\n" * 70)
    long_functions, _ = sizes(package)
    assert long_functions == ["runner/long.py:1 long (71 lines)"]


def test_no_command_shares_its_name_with_a_working_module():
    """`runner/cli/X.py` is the command X; a working module named X elsewhere (evaluation/evaluate.py beside the
    evaluate command, checks/lr_find.py beside lr_find) made a newcomer open the wrong file. The thin
    `runner/X.py` shims that keep `python -m runner.X` are the only other X."""
    package = ROOT / "runner"
    commands = {path.stem for path in (package / "cli").glob("*.py")} - {"__init__"}
    pairs = [str(path.relative_to(ROOT)) for path in package.rglob("*.py")
             if path.stem in commands and path.parent not in (package, package / "cli")]
    assert commands >= {"train", "evaluate", "check", "inspect_data", "lr_find", "runs", "compare"}
    assert not pairs, pairs
