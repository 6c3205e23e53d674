"""k-fold cross-validation: `python -m runner -m dataset.folds=5 'dataset.fold=range(5)'` (runner/data/folds.py).

Folds over train+val pooled (the test split never joins): disjoint, covering the pool, stratified, seeded by
dataset.fold_seed alone; for in-memory, file-backed and the user's own datasets; refused in one line when
they cannot be; the cache still only a matter of speed.
"""

from __future__ import annotations

import json
import logging
from collections import Counter

import pytest
import torch
from omegaconf import OmegaConf

from runner.common.errors import UserError
from runner.config.schema import validate
from runner.data import datasets, folds, introspect
from runner.data.image_files import image_files
from runner.run import train_and_evaluate as train_job
from tests.conftest import (
    TINY,
    assert_identical,
    checkpoint_weights,
    compose_config,
    make_imagefolder,
    run_cli,
)


def digits_splits(*overrides):
    return datasets.build_splits(compose_config(["dataset=digits", *overrides]).dataset)


def rows(dataset) -> Counter:
    """Each sample of an in-memory split as (image bytes, label), counted (digits has a few identical images)."""
    images, labels = dataset.tensors
    return Counter((x.numpy().tobytes(), int(y)) for x, y in zip(images, labels, strict=True))


def test_fold_numbers_are_stratified_balanced_and_seeded_by_hand():
    labels = [0] * 7 + [1] * 5 + [2] * 3  # 15 samples, 3 folds
    assignment = folds.fold_numbers(labels, 3, seed=0)
    for c in (0, 1, 2):  # per class: counts of each fold differ by at most 1 (7 -> 3,2,2; 5 -> 2,2,1; 3 -> 1,1,1)
        per_fold = Counter(f for f, y in zip(assignment, labels, strict=True) if y == c)
        assert sorted(per_fold.values(), reverse=True) == {0: [3, 2, 2], 1: [2, 2, 1], 2: [1, 1, 1]}[c]
    assert sorted(Counter(assignment).values()) == [5, 5, 5]  # and the folds themselves are the same size
    assert folds.fold_numbers(labels, 3, seed=0) == assignment
    assert folds.fold_numbers(labels, 3, seed=1) != assignment


def test_digits_folds_are_disjoint_cover_train_and_val_and_leave_test_alone():
    plain = digits_splits()
    pool = rows(plain["train"]) + rows(plain["val"])
    vals = []
    for fold in range(3):
        split = digits_splits("dataset.folds=3", f"dataset.fold={fold}")
        assert rows(split["train"]) + rows(split["val"]) == pool  # train and val: the pool, nothing twice
        assert rows(split["test"]) == rows(plain["test"])  # the test split never joins
        vals.append(rows(split["val"]))
        per_class = Counter(split["val"].tensors[1].tolist())
        assert sorted(per_class) == list(range(10))
    assert vals[0] + vals[1] + vals[2] == pool  # the three validation folds: the pool once
    assert all(abs(val.total() - pool.total() / 3) < 1 for val in vals)  # 1438 = 479 + 479 + 480


def test_the_folds_depend_on_fold_seed_alone():
    fold = ["dataset.folds=4", "dataset.fold=1"]
    first = rows(digits_splits(*fold)["val"])
    assert rows(digits_splits(*fold, "trainer.seed=7")["val"]) == first  # a seed group sees the same folds
    assert rows(digits_splits(*fold, "dataset.fold_seed=1")["val"]) != first


def test_imagefolder_with_train_and_val_folders_is_pooled_with_its_files(tmp_path):
    root = tmp_path / "images"
    make_imagefolder(root / "train", classes=3, per_class=4)
    make_imagefolder(root / "val", classes=3, per_class=2)
    cfg = ["dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=[8,8]"]
    plain = datasets.build_splits(compose_config(cfg).dataset)
    pool = set(image_files(plain["train"])) | set(image_files(plain["val"]))
    seen = []
    for fold in (0, 1):
        split = datasets.build_splits(compose_config([*cfg, "dataset.folds=2", f"dataset.fold={fold}"]).dataset)
        train, val = image_files(split["train"]), image_files(split["val"])
        assert set(train) | set(val) == pool and not set(train) & set(val) and len(val) == 9
        assert [p.parent.name for p in val].count("class_0") == 3  # 6 of each class: 3 per fold
        assert introspect.labels_of(split["val"]).tolist() == [int(p.parent.name[-1]) for p in val]
        seen += val
    assert sorted(seen) == sorted(pool)


def test_a_users_own_data_folds_and_keeps_its_training_augmentation():
    stripes = ["dataset=custom", "dataset._target_=tests.byo_data.stripes", "dataset.num_classes=4",
               "dataset.image_size=[12,12]", "dataset.augment=basic"]
    split = datasets.build_splits(compose_config([*stripes, "dataset.folds=3", "dataset.fold=2"]).dataset)
    assert len(split["train"]) + len(split["val"]) == 96 + 48 and abs(len(split["val"]) - 48) <= 1
    torch.manual_seed(0)
    assert not torch.equal(split["train"][0][0], split["train"][0][0])  # training images augmented
    assert torch.equal(split["val"][0][0], split["val"][0][0])  # validation images not


def test_the_fold_is_logged_with_its_sizes(caplog):
    with caplog.at_level(logging.INFO):
        digits_splits("dataset.folds=5", "dataset.fold=2")
    assert any("dataset.fold=2 of dataset.folds=5" in r.message and "1438 train+val" in r.message
               for r in caplog.records), [r.message for r in caplog.records]


@pytest.mark.parametrize(("overrides", "words"), [
    (["dataset.folds=5", "dataset.fold=5"], "dataset.fold=5 is not a fold of dataset.folds=5"),
    (["dataset.fold=1"], "dataset.fold=1 needs dataset.folds"),
    (["dataset.folds=1", "dataset.fold=0"], "dataset.folds=1 must be an integer >= 2"),
    (["dataset.folds=5"], "dataset.folds=5 needs dataset.fold"),
])
def test_fold_settings_that_cannot_be_are_refused_in_one_line(overrides, words):
    with pytest.raises(UserError) as refused:
        validate(compose_config(overrides))
    assert words in str(refused.value) and "Fix:" in str(refused.value) and "\n" not in str(refused.value)


def test_more_folds_than_a_class_has_samples_names_the_class(tmp_path):
    root = tmp_path / "images"
    make_imagefolder(root, classes=3, per_class=4)
    (root / "class_1" / "image_3.png").unlink()  # class_1: 3 images
    cfg = compose_config(["dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=[8,8]",
                          "dataset.val_fraction=0", "dataset.folds=4", "dataset.fold=0"])
    with pytest.raises(UserError) as refused:
        datasets.build_splits(cfg.dataset)
    message = str(refused.value)
    assert "the 3 samples class class_1 has" in message and "dataset.folds=3" in message and "\n" not in message


def test_the_evaluator_refuses_a_test_look_at_a_fold_run_unless_asked():
    from runner.evaluation.fold_rules import refuse_test_of_a_fold_run

    fold_run = {"dataset": {"name": "digits", "folds": 5, "fold": 2}}
    test = compose_config(["split=test"], config_name="evaluate")
    with pytest.raises(UserError) as refused:
        refuse_test_of_a_fold_run(fold_run, test)
    assert "dataset.fold=2" in str(refused.value) and "allow_fold_test=true" in str(refused.value)
    refuse_test_of_a_fold_run(fold_run, compose_config(["split=test", "allow_fold_test=true"], config_name="evaluate"))
    refuse_test_of_a_fold_run(fold_run, compose_config([], config_name="evaluate"))  # val: the fold's own
    refuse_test_of_a_fold_run({"dataset": {"name": "digits"}}, test)  # a run from before folds, or without


def test_a_resume_keeps_its_fold():
    from runner.common.rules import may_change_on_resume
    from runner.training.checkpoint import changed_settings

    cfg = compose_config(["dataset.folds=5", "dataset.fold=1"])
    assert not any(may_change_on_resume(cfg, key) for key in ("dataset.folds", "dataset.fold", "dataset.fold_seed"))
    old = {"dataset": {"folds": 5, "fold": 0, "fold_seed": 0}}
    assert changed_settings(old, {"dataset": {"folds": 5, "fold": 1, "fold_seed": 0}}) == ["dataset.fold: 0 -> 1"]
    assert changed_settings({"dataset": {}}, {"dataset": {"folds": None, "fold": None}}) == []  # a run from before


def test_hydra_sweeps_range_of_folds():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (override,) = OverridesParser.create().parse_overrides(["dataset.fold=range(5)"])
    assert list(override.sweep_iterator()) == [0, 1, 2, 3, 4]


def test_every_cache_trains_the_same_weights_on_a_fold(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNNER_CACHE", str(tmp_path / "cache"))
    root = make_imagefolder(tmp_path / "images", classes=3, per_class=6, size=(20, 24))
    common = ["dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=[12,12]", "dataset.folds=3",
              "dataset.fold=1", "dataset.augment=basic", "trainer.batch_size=6", "trainer.micro_batch_size=3",
              "trainer.deterministic=true", "trainer.epochs=1", "evaluate.after_training=false"]
    for cache in ("none", "disk"):
        train_job(compose_config([*common, f"dataset.cache={cache}"]), tmp_path / cache)
    assert_identical(checkpoint_weights(tmp_path / "none", 1), checkpoint_weights(tmp_path / "disk", 1))


@pytest.mark.slow
def test_a_multirun_over_folds_trains_one_run_per_fold(tmp_path):
    result = run_cli(["-m", *TINY, "trainer.epochs=1", "dataset.folds=2", "dataset.fold=0,1",
                      f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for fold in (0, 1):
        run_dir = tmp_path / "sweep" / str(fold)
        assert f"dataset.fold={fold}" in json.dumps(json.loads((run_dir / "run.json").read_text())["overrides"])
        assert f"fold: {fold}" in (run_dir / ".hydra" / "config.yaml").read_text()
        log = (run_dir / "train.log").read_text()
        assert f"dataset.fold={fold} of dataset.folds=2" in log and "22 validate" in log
    # the evaluator's test look refuses a fold's run in one line, and looks when asked
    refused = run_cli([f"run_dir={tmp_path / 'sweep' / '0'}", "split=test"], cwd=tmp_path, module="runner.evaluate")
    assert refused.returncode == 2 and "trained on fold 0 of 2" in refused.stdout + refused.stderr, refused.stdout
    allowed = run_cli([f"run_dir={tmp_path / 'sweep' / '0'}", "split=test", "allow_fold_test=true"], cwd=tmp_path,
                      module="runner.evaluate")
    assert allowed.returncode == 0, allowed.stderr[-2000:]


def test_an_ensemble_of_fold_runs_refuses_a_test_look_unless_asked(tmp_path):
    from runner.evaluation import ensemble

    runs = []
    for fold in (0, 1):
        run = tmp_path / f"fold{fold}"
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text(f"dataset:\n  name: digits\n  folds: 2\n  fold: {fold}\n")
        runs.append(str(run))
    asked = compose_config([f"ensemble=[{runs[0]},{runs[1]}]", "split=test"], config_name="evaluate")
    with pytest.raises(UserError) as refused:
        ensemble.evaluate_ensemble(asked)  # refused before any member is evaluated
    message = str(refused.value)
    assert f"ensemble member {runs[0]}" in message and "allow_fold_test=true" in message and "\n" not in message
    assert not (tmp_path / "fold0" / "eval").exists()  # nothing evaluated, no ledger written
    ensemble.refuse_test_of_fold_members(OmegaConf.merge(asked, {"allow_fold_test": True}))
    ensemble.refuse_test_of_fold_members(OmegaConf.merge(asked, {"split": "val"}))
