"""A refusal at start (after Hydra made the run folder) leaves no folder behind, as the command-line check does."""

from __future__ import annotations

import pytest

from tests.conftest import TINY, run_cli


@pytest.mark.slow
@pytest.mark.parametrize("refused", [
    ["model=resnet18", "trainer.micro_batch_size=1", "trainer.batch_size=4"],  # BatchNorm: needs the built model
    ["dataset=imagefolder", "dataset.root=MISSING", "dataset.num_classes=3"],  # the data is not there
])
def test_a_refusal_that_needs_the_built_job_leaves_no_run_folder(tmp_path, refused):
    run_dir = tmp_path / "outputs" / "run"
    settings = [*TINY, *refused]
    settings = [s.replace("MISSING", str(tmp_path / "no-such-folder")) for s in settings]
    result = run_cli([*settings, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Fix:" in result.stdout + result.stderr
    assert not run_dir.exists(), sorted(p.name for p in run_dir.rglob("*"))


@pytest.mark.slow
def test_a_refusal_in_a_folder_with_a_run_of_its_own_keeps_everything(tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli([*TINY, "trainer.epochs=1", f"hydra.run.dir={run_dir}"], cwd=tmp_path).returncode == 0
    before = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))
    result = run_cli([*TINY, "optimizer.lr=0.1", f"hydra.run.dir={run_dir}"], cwd=tmp_path)  # a different config
    assert result.returncode == 2 and "different config" in result.stdout + result.stderr
    assert set(before) <= {str(p.relative_to(run_dir)) for p in run_dir.rglob("*")}
