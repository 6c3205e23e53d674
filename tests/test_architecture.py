"""The data flow's arrows are checked, not only drawn: `lint-imports` with pyproject's contracts."""

import shutil
import subprocess
import sys
from pathlib import Path

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


def plant(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


def test_a_backwards_import_is_caught_and_named(tmp_path):
    """The check of the check: the evaluator importing the trainer breaks the layers contract."""
    root = copy_of_the_project(tmp_path)
    plant(root / "runner/evaluation/metrics.py", "import runner.training.loop  # noqa")
    result = lint_imports(root)
    assert result.returncode != 0
    assert "runner.evaluation.metrics -> runner.training.loop" in result.stdout


def test_an_import_of_the_sweeper_is_caught(tmp_path):
    root = copy_of_the_project(tmp_path)
    plant(root / "runner/run.py", "import runner.sweep.study  # noqa")
    result = lint_imports(root)
    assert result.returncode != 0
    assert "runner.run -> runner.sweep.study" in result.stdout


def test_an_import_cycle_is_caught(tmp_path):
    root = copy_of_the_project(tmp_path)
    plant(root / "runner/evaluation/metrics.py", "import runner.evaluation.ensemble  # noqa")
    result = lint_imports(root)
    assert result.returncode != 0
    assert "No import cycles between modules or packages BROKEN" in result.stdout
