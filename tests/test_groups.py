"""Many runs as one: seed groups and cross-validation folds in runner.runs and runner.compare, statistics by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from runner.evaluation.groups import group_rows, mean_interval, paired_t, welch
from runner.evaluation.run_table import table


def t_density(x: float, df: float) -> float:
    return math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2)) * (1 + x * x / df) ** (-(df + 1) / 2)


def two_sided_p(t: float, df: float, steps: int = 200_000) -> float:
    """The reference p-value: 1 minus the t density integrated over [-|t|, |t|] (the trapezoid rule)."""
    width = abs(t) / steps
    inside = sum(t_density(i * width, df) for i in range(1, steps)) + (t_density(0, df) + t_density(abs(t), df)) / 2
    return 1 - 2 * inside * width


def test_mean_standard_deviation_and_t_interval_by_hand():
    values = [0.80, 0.84, 0.82, 0.86, 0.78]
    result = mean_interval(values)
    mean = sum(values) / 5
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 4)
    half = 2.776445105 * std / math.sqrt(5)  # t(0.975, 4 degrees of freedom) from a printed table
    assert result["n"] == 5 and result["mean"] == pytest.approx(mean) and result["std"] == pytest.approx(std)
    assert result["ci95"] == pytest.approx([mean - half, mean + half])
    assert mean_interval([0.9])["std"] is None and mean_interval([0.9])["ci95"] is None  # one run: no spread


def test_welch_t_test_by_hand():
    a, b = [0.80, 0.82, 0.81], [0.85, 0.88, 0.84, 0.86]
    result = welch(a, b)
    ma, mb = sum(a) / 3, sum(b) / 4
    va = sum((x - ma) ** 2 for x in a) / 2
    vb = sum((x - mb) ** 2 for x in b) / 3
    se2 = va / 3 + vb / 4
    df = se2**2 / ((va / 3) ** 2 / 2 + (vb / 4) ** 2 / 3)
    assert result["difference"] == pytest.approx(mb - ma) and result["t"] == pytest.approx((mb - ma) / math.sqrt(se2))
    assert result["df"] == pytest.approx(df)
    assert result["p_value"] == pytest.approx(two_sided_p(result["t"], df), abs=1e-6)


def test_paired_t_over_samples_by_hand():
    d = np.array([0.2, 0.0, 0.4, -0.2, 0.6, 0.2, 0.0, 0.4])
    result = paired_t(d)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(8))
    assert result["t"] == pytest.approx(t) and result["df"] == 7
    assert result["p_value"] == pytest.approx(two_sided_p(t, 7), abs=1e-6)
    assert paired_t(np.zeros(5))["p_value"] == 1.0  # no sample differs: no evidence


def fake_run(root: Path, folder: str, top1: float | None, status: str = "finished", **settings) -> Path:
    """A run folder as the table reads it, its config {lr, seed, fold, ...} as given."""
    run_dir = root / folder
    (run_dir / ".hydra").mkdir(parents=True)
    config = {"name": "exp", "optimizer": {"lr": settings.get("lr", 0.01)}, "trainer": {"seed": settings.get("seed", 0),
              "epochs": 3}, "dataset": {"fold": settings.get("fold"), "folds": settings.get("folds")},
              "sweep": {"study": settings.get("study")}}
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    overrides = [f"trainer.seed={settings.get('seed', 0)}", f"optimizer.lr={settings.get('lr', 0.01)}"]
    (run_dir / "run.json").write_text(json.dumps({"status": status, "overrides": overrides}))
    if top1 is not None:
        (run_dir / "eval").mkdir()
        (run_dir / "eval" / "best.json").write_text(json.dumps({"checkpoint": "checkpoints/epoch-0003.pt",
                                                                "metric": "top1", "value": top1}))
    return run_dir


@pytest.fixture
def seeds_and_folds(tmp_path) -> Path:
    for seed, top1 in enumerate([0.80, 0.84, 0.82]):
        fake_run(tmp_path, f"lr01/{seed}", top1, seed=seed, study=f"s{seed}")
    for seed, top1 in enumerate([0.70, 0.74]):
        fake_run(tmp_path, f"lr1/{seed}", top1, seed=seed, lr=0.1)
    fake_run(tmp_path, "lr1/2", None, status="failed: RuntimeError: out of memory", seed=2, lr=0.1)
    for fold, top1 in enumerate([0.9, 0.8, 0.85, 0.95, 0.75]):
        fake_run(tmp_path, f"cv/{fold}", top1, lr=0.001, fold=fold, folds=5)
    return tmp_path


def test_group_by_auto_one_row_per_seed_group_and_a_cross_validated_row(seeds_and_folds):
    rows = {r["group"]: r for r in group_rows(table(seeds_and_folds), "auto")}
    assert set(rows) == {"lr01", "lr1", "cv"}
    seeds = rows["lr01"]
    assert (seeds["kind"], seeds["runs"], seeds["metric"]) == ("seeds", "3", "top1")
    assert seeds["mean"] == pytest.approx(0.82) and seeds["std"] == pytest.approx(0.02)
    half = 4.302652730 * 0.02 / math.sqrt(3)  # t(0.975, 2)
    assert seeds["ci95"] == f"[{0.82 - half:.4f}, {0.82 + half:.4f}]"
    failed = rows["lr1"]
    assert failed["runs"] == "2 of 3" and failed["status"] == "2 finished, 1 failed"
    assert failed["mean"] == pytest.approx(0.72)
    folds = rows["cv"]
    assert (folds["kind"], folds["metric"], folds["runs"]) == ("folds", "cross-validated top1", "5")
    assert folds["mean"] == pytest.approx(0.85) and folds["std"] == pytest.approx(math.sqrt(0.025 / 4))
    assert "trainer.seed" not in seeds["overrides"] and seeds["overrides"] == "optimizer.lr=0.01"


def test_group_by_a_key_pools_over_it_and_none_keeps_one_row_a_run(seeds_and_folds):
    pooled = group_rows(table(seeds_and_folds), "trainer.seed,optimizer.lr")
    assert sorted(r["runs"] for r in pooled) == ["1"] * 5 + ["5 of 6"]  # the folds: only the keys named
    assert next(r for r in pooled if r["runs"] == "5 of 6")["kind"] == "optimizer.lr+seeds"
    assert len(table(seeds_and_folds)) == 11  # group_by=none: today's table


def test_runs_that_differ_beyond_the_seed_are_split_with_the_keys_named(seeds_and_folds, caplog):
    group_rows(table(seeds_and_folds), "auto")
    assert "runs named exp form 3 groups: they differ in dataset.folds, optimizer.lr" in caplog.text


def test_the_command_prints_the_groups(seeds_and_folds, capsys):
    from runner.runs import cli

    cli([str(seeds_and_folds), "group_by=auto", "sort=mean", "format=csv"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("name,group,kind,runs") and [line.split(",")[1] for line in lines[1:]] == [
        "cv", "lr01", "lr1"]


def test_group_by_naming_no_key_is_one_line_and_exit_2(seeds_and_folds, capsys):
    from runner.runs import cli

    with pytest.raises(SystemExit) as stopped:
        cli([str(seeds_and_folds), "group_by=model=convnet"])
    said = capsys.readouterr().err
    assert stopped.value.code == 2 and said.count("\n") == 1 and "group_by='model=convnet' names no config keys" in said


LABELS = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]


def evaluated_run(run_dir: Path, lr: float, seed: int, right: list[int]) -> Path:
    """A run evaluated on the 10 validation samples LABELS, right on the samples listed (3 classes)."""
    import torch

    from runner.evaluation.predictions import save_predictions

    fake_run(run_dir.parent, run_dir.name, len(right) / 10, lr=lr, seed=seed)
    best = json.loads((run_dir / "eval" / "best.json").read_text())
    best.update(split="val", tta="none")
    (run_dir / "eval" / "best.json").write_text(json.dumps(best))
    predicted = [label if i in right else (label + 1) % 3 for i, label in enumerate(LABELS)]
    log_probs = torch.log(torch.nn.functional.one_hot(torch.tensor(predicted), 3).float() * 0.8 + 0.2 / 3)
    save_predictions(run_dir / "eval", best, log_probs, torch.tensor(LABELS))
    return run_dir


RIGHT_A = [[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 6], [0, 1, 2, 3, 4, 7, 8]]  # top-1 0.6, 0.5, 0.7
RIGHT_B = [[0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 3, 4, 5, 9], [0, 1, 2, 3, 4, 5, 6, 8, 9]]  # 0.8, 0.7, 0.9


@pytest.fixture
def two_groups(tmp_path) -> Path:
    for seed, (right_a, right_b) in enumerate(zip(RIGHT_A, RIGHT_B, strict=True)):
        evaluated_run(tmp_path / "lr01" / str(seed), 0.01, seed, right_a)
        evaluated_run(tmp_path / "lr1" / str(seed), 0.1, seed, right_b)
    return tmp_path


def test_compare_two_seed_groups_welch_across_seeds_and_paired_over_samples(two_groups, tmp_path, capsys):
    from runner.compare import cli

    out = tmp_path / "compared"
    cli([str(two_groups / "lr01"), str(two_groups / "lr1"), f"out={out}"])
    text = (out / "compare.md").read_text()
    assert "| optimizer.lr | 0.01 | 0.1 |" in text and "trainer.seed" not in text.split("## What differs")[1][:200]
    assert "- A: 3 runs (seeds), top1 mean 0.6000, std 0.1000" in text
    welch_t = 0.2 / math.sqrt(0.01 / 3 + 0.01 / 3)  # equal spreads: df = 4
    assert f"Welch's t-test across seeds: B - A = +0.2000, t = {welch_t:.3f}, df = 4.0, p = " in text
    share_a = np.array([sum(i in right for right in RIGHT_A) / 3 for i in range(10)])
    share_b = np.array([sum(i in right for right in RIGHT_B) / 3 for i in range(10)])
    d = share_b - share_a
    t = d.mean() / (d.std(ddof=1) / math.sqrt(10))
    assert f"paired t-test over the same 10 val samples of the seed-averaged correctness: B - A = +{d.mean():.4f}, " \
           f"t = {t:.3f}, df = 9, p = {two_sided_p(t, 9):.3g}" in text
    assert (out / "curves.png").is_file() and "compare.md" in capsys.readouterr().out


def test_a_group_with_a_second_differing_key_is_refused_naming_it(two_groups, tmp_path, capsys):
    from runner.compare import cli

    evaluated_run(two_groups / "lr01" / "odd", 0.5, 7, [0])
    with pytest.raises(SystemExit) as stopped:
        cli([str(two_groups / "lr01"), str(two_groups / "lr1"), f"out={tmp_path / 'x'}"])
    said = capsys.readouterr().err
    assert stopped.value.code == 2 and said.count("\n") == 1 and not (tmp_path / "x").exists()
    assert f"{two_groups / 'lr01'} holds runs that differ in optimizer.lr" in said


def test_a_quoted_glob_names_a_group(two_groups, tmp_path):
    from runner.compare import cli

    evaluated_run(two_groups / "lr01" / "odd", 0.5, 7, [0])
    out = tmp_path / "compared"
    cli([str(two_groups / "lr01" / "[0-2]"), str(two_groups / "lr1"), f"out={out}"])
    assert "- A: 3 runs (seeds), top1 mean 0.6000" in (out / "compare.md").read_text()


def swept(root: Path, folder: str, top1: float, lr: float, seed: int, name: str = "exp", **extra) -> Path:
    """A sweep trial: its overrides carry the sweeper's plumbing and a long shared one."""
    run_dir = fake_run(root, folder, top1, seed=seed, lr=lr, study="st", **extra)
    overrides = [f"trainer.seed={seed}", f"optimizer.lr={lr}", "sweep.study=st", "sweep.storage=sqlite:///x.db",
                 "model=resnet_with_a_rather_long_name_for_wrapping", f"dataset.image_size={int(lr * 1000)}"]
    record = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**record, "overrides": overrides}))
    if name != "exp":
        config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
        (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump({**config, "name": name}))
    return run_dir


def test_grouped_table_fits_100_columns_keeps_ci95_and_shows_no_plumbing(tmp_path, monkeypatch):
    from runner.evaluation.groups import GROUP_COLUMNS
    from runner.evaluation.run_table import formatted

    for lr in (0.01, 0.1):
        for seed in range(3):
            swept(tmp_path, f"a_rather_long_sweep_folder_name/lr{lr}/trial_{seed}", 0.95 + seed / 40, lr, seed)
    swept(tmp_path, "cv/0", 0.9, 0.001, 0, fold=0, folds=5)
    swept(tmp_path, "cv/1", 0.8, 0.001, 0, fold=1, folds=5)
    rows = group_rows(table(tmp_path), "auto")
    assert "sweep." not in formatted(rows, "csv", GROUP_COLUMNS)
    monkeypatch.setenv("COLUMNS", "100")
    text = formatted(rows, "table", GROUP_COLUMNS)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100, text
    assert all(line.count("[") == line.count("]") for line in lines), text  # no interval cut off
    header = next(line for line in lines if line.startswith(("name  ", "group  ")))
    assert "ci95" in header and "mean" in header and "sweep." not in text
    assert text.count("model=resnet_with_a_rather_long_name_for_wrapping") == 1  # shared: said once
    monkeypatch.setenv("COLUMNS", "40")
    assert max(len(line) for line in formatted(rows, "table", GROUP_COLUMNS).splitlines()) <= 40


def test_observing_settings_do_not_split_a_seed_group(tmp_path):
    for seed in range(2):
        run_dir = fake_run(tmp_path, f"g/{seed}", 0.8, seed=seed)
        config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
        config["checkpoint"] = {"every_updates": seed + 10, "keep_updates": seed}
        config["logger"] = {"wandb": {"project": f"p{seed}"}}
        config["trainer"]["log_histograms_every"] = seed + 1
        (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    assert [r["runs"] for r in group_rows(table(tmp_path), "auto")] == ["2"]


@pytest.mark.parametrize(("group_by", "named"), [("bogus.key", "'bogus.key'"), ("seed", "group_by=trainer.seed"),
                                                 ("auto,optimizer.lr", "auto is not a key")])
def test_group_by_an_unknown_key_is_one_line_naming_the_closest(seeds_and_folds, capsys, group_by, named):
    from runner.runs import cli

    with pytest.raises(SystemExit) as stopped:
        cli([str(seeds_and_folds), f"group_by={group_by}"])
    said = capsys.readouterr().err
    assert stopped.value.code == 2 and said.count("\n") == 1 and named in said and "Fix:" in said


def test_runs_of_two_names_are_two_groups(tmp_path):
    for seed in range(2):
        swept(tmp_path, f"a/{seed}", 0.8, 0.01, seed)
        swept(tmp_path, f"b/{seed}", 0.7, 0.01, seed, name="other")
    assert sorted((r["name"], r["runs"]) for r in group_rows(table(tmp_path), "auto")) == [("exp", "2"),
                                                                                             ("other", "2")]


def test_the_interval_of_an_accuracy_stays_within_0_and_1(tmp_path):
    for seed, top1 in enumerate([0.99, 0.80, 1.0]):
        fake_run(tmp_path, f"g/{seed}", top1, seed=seed)
    low, high = json.loads(group_rows(table(tmp_path), "auto")[0]["ci95"])
    assert 0 <= low < high == 1.0


def test_a_partial_cross_validation_says_so_and_counts_each_fold_once(tmp_path, caplog):
    fake_run(tmp_path, "cv/0", 0.9, fold=0, folds=5)
    fake_run(tmp_path, "cv/1", 0.8, fold=1, folds=5)
    again = fake_run(tmp_path, "cv/1-again", 0.6, fold=1, folds=5)
    for run_dir, start in ((tmp_path / "cv/0", "2026-01-01T00"), (tmp_path / "cv/1", "2026-01-02T00"),
                           (again, "2026-01-03T00")):
        record = json.loads((run_dir / "run.json").read_text())
        (run_dir / "run.json").write_text(json.dumps({**record, "start_time": start}))
    row = group_rows(table(tmp_path), "auto")[0]
    assert row["runs"] == "2 of 5 folds" and row["mean"] == pytest.approx(0.75)  # fold 1: its newest run, 0.6
    assert "a fold was run more than once" in caplog.text


def test_glob_operands_name_the_output_folder_by_their_fixed_part_and_a_hash(two_groups, monkeypatch):
    from runner.compare import cli

    monkeypatch.chdir(two_groups)
    cli([str(two_groups / "lr01" / "[0-2]"), str(two_groups / "lr1*")])
    (written,) = (two_groups / "outputs" / "tools" / "compare").iterdir()
    assert not any(c in written.name for c in "*?[") and written.name.startswith("lr01-")
    assert "_vs_" in written.name and (written / "compare.md").is_file()


def test_overlapping_groups_are_refused_in_one_line(two_groups, tmp_path, capsys):
    from runner.compare import cli

    with pytest.raises(SystemExit) as stopped:
        cli([str(two_groups / "lr01"), str(two_groups / "lr01" / "[0-1]"), f"out={tmp_path / 'x'}"])
    said = capsys.readouterr().err
    assert stopped.value.code == 2 and said.count("\n") == 1 and "in both groups" in said and "Fix:" in said
    assert not (tmp_path / "x").exists()
