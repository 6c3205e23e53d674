"""Every check is proven by a planted bug it must flag, and passes the healthy default."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import Subset, TensorDataset

from runner import models
from runner.checks.lr_range_test import range_test, suggest
from runner.checks.registry import CHECKS, run
from runner.checks.setup import Result, Setup, fresh, setup_for
from runner.checks.training import train_step, train_steps
from runner.data import datasets, introspect
from tests.conftest import compose_config, run_cli

DIGITS = ["checks.overfit_steps=150", "checks.baseline_steps=40"]


def digits_setup(*overrides) -> Setup:
    return setup_for(compose_config([*DIGITS, *overrides]), torch.device("cpu"))


def with_model(setup: Setup, make) -> Setup:
    """The same data with a planted model: make(healthy_model) returns the buggy one."""
    healthy = setup.make_model
    return Setup(setup.cfg, setup.splits, lambda init_output_bias=None: make(healthy(init_output_bias)))


def verdict(setup: Setup, name: str) -> Result:
    return CHECKS[name](setup)


@pytest.fixture(scope="module")
def healthy():
    return digits_setup()


def test_the_healthy_default_passes_every_check(healthy):
    results = run(healthy, CHECKS)
    assert [(r.check, r.verdict) for r in results] == [(name, "PASS") for name in CHECKS], \
        [(r.check, r.verdict, r.figure, r.fix) for r in results if r.verdict != "PASS"]


class Scaled(nn.Module):
    def __init__(self, inner, factor):
        super().__init__()
        self.inner, self.factor = inner, factor

    def forward(self, x):
        return self.inner(x) * self.factor


def test_logits_times_100_at_init_fail_the_loss_at_init(healthy):
    result = verdict(with_model(healthy, lambda m: Scaled(m, 100.0)), "loss_at_init")
    assert result.verdict == "FAIL" and "logits at init are too large" in result.fix


def test_softmax_before_cross_entropy_fails_overfit_one_batch(healthy):
    result = verdict(with_model(healthy, lambda m: nn.Sequential(m, nn.Softmax(dim=1))), "overfit_batch")
    assert result.verdict == "FAIL" and "outputs probabilities" in result.fix
    assert result.details["final_loss"] > 1.0  # softmax-then-CE cannot go below log(1 + (C-1)/e) = 1.46


class MixesBatch(nn.Module):
    """A view used where a permute was meant: rows of the output come from other samples."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        b = x.shape[0]
        mixed = x.reshape(x.shape[1], b, -1).permute(1, 0, 2).reshape_as(x)
        return self.inner(mixed)


class SubtractsBatchMean(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x - x.mean(dim=0, keepdim=True))


@pytest.mark.parametrize("planted", [MixesBatch, SubtractsBatchMean])
def test_a_model_that_mixes_samples_fails_batch_independence(healthy, planted):
    setup = setup_for(compose_config([*DIGITS, "dataset=synthetic", "dataset.channels=2",
                                             "dataset.image_size=[5,7]"]), torch.device("cpu"))
    assert verdict(setup, "batch_independence").verdict == "PASS"
    result = verdict(with_model(setup, planted), "batch_independence")
    assert result.verdict == "FAIL" and "view/reshape where a permute" in result.fix


class IgnoresInput(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(classes))

    def forward(self, x):
        return self.bias.expand(len(x), -1)


def test_a_model_that_ignores_its_input_fails_the_baseline(healthy):
    result = verdict(with_model(healthy, lambda m: IgnoresInput(10)), "input_independent")
    assert result.verdict == "FAIL" and "does not depend on its input" in result.fix


def test_random_labels_fail_the_baseline(healthy):
    generator = torch.Generator().manual_seed(0)
    shuffled = {}
    for split, dataset in healthy.splits.items():
        x = torch.stack([dataset[i][0] for i in range(len(dataset))])
        shuffled[split] = TensorDataset(x, torch.randint(0, 10, (len(x),), generator=generator))
    result = verdict(Setup(healthy.cfg, shuffled, healthy.make_model), "input_independent")
    assert result.verdict == "FAIL", result.figure


def test_unnormalized_0_to_255_input_is_flagged():
    result = verdict(digits_setup("dataset.mean=[0.0]", "dataset.std=[0.00392157]"), "data")
    assert result.verdict == "WARN" and "not standardized" in result.fix
    assert result.details["max"] > 200


def test_nan_input_fails_the_data_check():
    result = verdict(digits_setup("dataset=synthetic", "dataset.noise=nan"), "data")
    assert result.verdict == "FAIL" and "NaN" in result.fix


def test_labels_outside_the_class_range_fail_the_data_check(healthy):
    x, y = healthy.splits["train"].tensors
    splits = {**healthy.splits, "train": TensorDataset(x, y + 5)}  # labels 5..14 for 10 classes
    assert verdict(Setup(healthy.cfg, splits, healthy.make_model), "data").verdict == "FAIL"


def test_a_train_validation_label_shift_is_flagged(healthy):
    val = healthy.splits["val"]
    only_zeros = (introspect.labels_of(val) <= 1).nonzero().flatten().tolist()
    splits = {**healthy.splits, "val": Subset(val, only_zeros)}
    result = verdict(Setup(healthy.cfg, splits, healthy.make_model), "splits")
    assert result.verdict == "WARN" and result.details["label_shift_p_value"] < 1e-3


def test_a_subset_is_stratified_so_the_splits_check_passes_and_a_shift_in_it_is_named_as_the_subsets():
    subset = digits_setup("dataset.subset=64")
    assert verdict(subset, "splits").verdict == "PASS"  # a stratified miniature: every class, balanced
    val = subset.splits["val"]
    shifted = {**subset.splits, "val": Subset(val, (introspect.labels_of(val) <= 1).nonzero().flatten().tolist())}
    result = verdict(Setup(subset.cfg, shifted, subset.make_model), "splits")
    assert result.verdict == "WARN" and "in this dataset.subset=64 miniature (not necessarily the data)" in result.fix


def test_images_duplicated_across_splits_fail(healthy):
    leaked = Subset(healthy.splits["train"], list(range(5)))
    splits = {**healthy.splits, "test": leaked}
    result = verdict(Setup(healthy.cfg, splits, healthy.make_model), "splits")
    assert result.verdict == "FAIL" and len(result.details["duplicates_across_splits"]) == 5
    assert result.details["duplicates_across_splits"][0] == ("train[0]", "test[0]")


class UnusedParameter(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.forgotten = inner, nn.Linear(3, 3)

    def forward(self, x):
        return self.inner(x)


def test_a_parameter_without_gradient_fails_gradients_flow(healthy):
    result = verdict(with_model(healthy, UnusedParameter), "gradients_flow")
    assert result.verdict == "FAIL"
    assert result.details["problems"] == {"forgotten.weight": "no gradient (unused)", "forgotten.bias": "no gradient (unused)"}


class AlwaysDropout(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(F.dropout(x, 0.5, training=True))  # ignores eval mode


def test_randomness_in_eval_mode_fails_train_eval_mode(healthy):
    assert verdict(digits_setup("model.dropout=0.3"), "train_eval_mode").verdict == "PASS"
    result = verdict(with_model(healthy, AlwaysDropout), "train_eval_mode")
    assert result.verdict == "FAIL" and "F.dropout(training=True)" in result.fix


def test_prior_bias_on_imbalanced_classes(tmp_path):
    base = ["dataset=synthetic", "dataset.num_classes=4", "dataset.image_size=[4,4]", "dataset.noise=3.0"]
    setup = setup_for(compose_config([*DIGITS, *base]), torch.device("cpu"))
    x, y = setup.splits["train"].tensors
    imbalanced = torch.where(torch.arange(len(y)) % 10 < 8, 0, y)  # 80%+ of the labels are class 0
    splits = {**setup.splits, "train": TensorDataset(x, imbalanced)}

    def make(init_output_bias=None):
        cfg = compose_config([*base, f"model.init_output_bias={init_output_bias or 'none'}"]).model
        return models.build(cfg, class_counts=torch.bincount(imbalanced, minlength=4))

    result = verdict(Setup(setup.cfg, splits, make), "output_bias")
    assert result.details["prior_bias"] < result.details["uniform_bias"] - 0.3
    assert result.verdict == "WARN" and result.fix == "set model.init_output_bias=prior"
    prior_cfg = compose_config([*DIGITS, *base, "model.init_output_bias=prior"])
    at_init = verdict(Setup(prior_cfg, splits, make), "loss_at_init")
    assert at_init.verdict == "PASS" and at_init.expected.startswith("entropy of the class prior")


def make_color_folder(root, broken: bool, gray: bool):
    rng = np.random.default_rng(0)
    for c in range(2):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (10 + i, 12, 3), dtype=np.uint8)).save(root / f"c{c}" / f"{i}.jpg")
    if broken:
        good = (root / "c0" / "0.jpg").read_bytes()
        (root / "c0" / "broken.jpg").write_bytes(good[: len(good) // 3])
    if gray:
        Image.fromarray(rng.integers(0, 256, (10, 12), dtype=np.uint8)).save(root / "c1" / "gray.jpg")


@pytest.mark.parametrize(("broken", "gray", "expected", "named"), [
    (False, False, "PASS", None), (True, False, "FAIL", "broken.jpg"), (False, True, "WARN", "gray.jpg")])
def test_outliers_corrupted_jpeg_and_grayscale(tmp_path, broken, gray, expected, named):
    make_color_folder(tmp_path, broken, gray)
    cfg = compose_config(["dataset=imagefolder", f"dataset.root={tmp_path}", "dataset.num_classes=2",
                          "dataset.image_size=[8,8]"])
    splits, _ = datasets.build_screened_splits(cfg.dataset, refuse_bad=False)  # as setup_for builds them
    result = verdict(Setup(cfg, splits, lambda **_: None), "outliers")
    assert result.verdict == expected, result.figure
    if named:
        assert named in result.fix


def test_lr_finder_suggestion_trains_and_100x_does_not(tmp_path):
    cfg = compose_config(["lr_find.steps=120", "optimizer=sgd", "optimizer.momentum=0.0", "optimizer.nesterov=false",
                          "optimizer.weight_decay=0.0"])
    setup = setup_for(cfg, torch.device("cpu"))
    before = {k: v.clone() for k, v in fresh(setup).state_dict().items()}
    curve = range_test(setup, cfg.lr_find)
    lr = suggest(curve, "steepest")
    assert curve["lr"][0] < lr < curve["lr"][-1]

    def trained_val_loss(rate: float) -> float:
        model = fresh(setup)
        batches = [setup.batch(size=64, seed=s) for s in range(16)]
        train_steps(setup, model, batches, 150, lr=rate)
        x, y = setup.batch("val", size=359)
        with torch.no_grad():
            loss = float(F.cross_entropy(model.eval()(x), y))
        return loss if math.isfinite(loss) else math.inf

    at_suggestion, at_100x = trained_val_loss(lr), trained_val_loss(100 * lr)
    assert at_suggestion < 0.5 * math.log(10), at_suggestion  # converges
    assert at_100x > 2 * at_suggestion, (at_suggestion, at_100x)  # 100x the suggestion does not
    assert all(torch.equal(before[k], v) for k, v in fresh(setup).state_dict().items())


def test_the_one_training_step_is_one_update_on_the_plain_cross_entropy(healthy):
    """train_step (overfit_batch, input_independent, lr_find): train mode, the loss before the update."""
    x, y = healthy.batch(size=7)
    model, reference = fresh(healthy).eval(), fresh(healthy).train()
    loss = train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), x, y)
    expected = F.cross_entropy(reference(x), y)  # no label smoothing, the batch's mean
    expected.backward()
    torch.optim.SGD(reference.parameters(), lr=0.1).step()
    assert model.training and loss == pytest.approx(float(expected.detach()), rel=1e-6)  # summed per sample: rounding
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_the_check_command(workdir):
    result = run_cli(["checks=[data,loss_at_init,gradients_flow]"], cwd=workdir, module="runner.check")
    assert result.returncode == 0, result.stdout + result.stderr
    header = next(line for line in result.stdout.splitlines() if line.startswith("check "))
    assert header.split()[:4] == ["check", "figure", "expected", "verdict"]
    path = next(workdir.glob("outputs/tools/default/check_*/checks.json"))
    assert [r["check"] for r in json.loads(path.read_text())] == ["data", "loss_at_init", "gradients_flow"]
    failing = run_cli(["dataset=synthetic", "dataset.noise=nan", "checks=[data]"], cwd=workdir, module="runner.check")
    assert failing.returncode == 1 and "FAIL" in failing.stdout


@pytest.mark.slow
def test_preflight_refuses_to_train_on_a_fail(workdir):
    result = run_cli(["dataset=synthetic", "dataset.noise=nan", "checks.preflight=true"], cwd=workdir)
    assert result.returncode == 2
    assert "preflight check data failed" in result.stdout and "checks.strict=false" in result.stdout
    assert not list(workdir.glob("outputs/default/*/checkpoints/*.pt"))


@pytest.mark.slow
def test_inspect_data_and_lr_find_commands(workdir, flowers_root):
    result = run_cli(["+experiment=flowers", f"dataset.root={flowers_root}", "dataset.download=false",
                      "dataset.subset=40"], cwd=workdir, module="runner.inspect_data")
    assert result.returncode == 0, result.stdout + result.stderr
    report = next(workdir.glob("outputs/tools/flowers/inspect_data_*/report.md"))
    for name in ("samples_stored", "samples_model_view", "per_class", "histograms", "outliers"):
        assert (report.parent / f"{name}.png").is_file() and f"({name}.png)" in report.read_text()
    found = run_cli(["lr_find.steps=60"], cwd=workdir, module="runner.lr_find")
    assert found.returncode == 0, found.stderr
    assert "suggested (steepest): optimizer.lr=" in found.stdout
    assert len(next(workdir.glob("outputs/tools/default/lr_find_*/lr_find.csv")).read_text().splitlines()) > 10


def test_the_histograms_have_no_empty_panel_and_bars_for_labels(healthy):
    import warnings

    from runner.checks.data_report import histograms_figure

    x, _ = healthy.batch(size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no matplotlib warning reaches the terminal
        figure, _ = histograms_figure(healthy, x.cpu(), records=[])["histograms"]
    axes = figure.get_axes()
    assert len(axes) == 2  # in-memory tensors: no image-size panel
    assert len(axes[1].patches) == 3 * 10  # a bar per class and split, side by side


def test_the_data_report_names_its_classes_and_its_odd_files(tmp_path, workdir):
    from tests.conftest import make_bad_image, make_imagefolder

    root = make_imagefolder(tmp_path / "images", classes=2, per_class=6)
    for kind in ("grayscale", "cmyk", "random bytes"):
        make_bad_image(root / "class_1" / f"odd_{kind.replace(' ', '_')}.jpg", kind)
    result = run_cli(["dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=[8,8]",
                      f"hydra.run.dir={workdir / 'report'}"], cwd=workdir, module="runner.inspect_data")
    assert result.returncode == 0, result.stdout[-2000:]
    report = (workdir / "report" / "report.md").read_text()
    assert "- 1 do not decode: odd_random_bytes.jpg" in report
    assert "converted 1 CMYK (CMYK), 1 grayscale (L)" in report
    assert "| class | name | train | val |" in report and "| 1 | class_1 |" in report


def test_images_in_two_splits_are_found_where_a_split_augments_its_images():
    """The hash is of the stored image, not of a random draw: a training split that augments every read (here
    noise added, within a Subset) hashed a new image each time, so its images leaked to test went unseen."""
    from runner.data.transforms import TransformedTensors

    setup = digits_setup()
    images, labels = (torch.randn(40, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
                      torch.arange(40) % 10)
    augmented = Subset(TransformedTensors(images, labels, lambda x: x + 0.01 * torch.randn_like(x)), list(range(40)))
    splits = {"train": augmented, "val": setup.splits["val"], "test": TensorDataset(images[:3], labels[:3])}
    result = verdict(Setup(setup.cfg, splits, setup.make_model), "splits")
    assert result.verdict == "FAIL" and len(result.details["duplicates_across_splits"]) == 3, result
