"""dataset.auto_augment / dataset.random_erasing: each op equals torchvision v2's, each sample's draw its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from runner.data import auto_augment
from runner.data.auto_augment import (
    RAND_SPACE,
    TRIVIAL_SPACE,
    SampleOps,
    apply_op,
    drawn_ops,
    erased,
    erasing_boxes,
)
from runner.data.batch_augment import Finish, crop_boxes, resized_crops
from tests.conftest import refused_in_one_line

IMAGE = torch.randint(0, 256, (3, 20, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("space, reference", [(TRIVIAL_SPACE, v2.TrivialAugmentWide), (RAND_SPACE, v2.RandAugment)])
def test_the_op_lists_and_magnitude_bins_are_torchvisions(space, reference):
    theirs = reference._AUGMENTATION_SPACE
    assert list(space) == list(theirs)  # the same ops in the same order: the op draw indexes it
    for op, (magnitudes, signed) in space.items():
        their_magnitudes, their_signed = theirs[op]
        assert signed == their_signed, op
        ours, expected = magnitudes(31, 20, 24), their_magnitudes(31, 20, 24)
        assert (ours is None) == (expected is None), op
        if ours is not None:
            torch.testing.assert_close(ours, expected, rtol=0, atol=0)


@pytest.mark.parametrize("op", list(TRIVIAL_SPACE))
@pytest.mark.parametrize("bin_", [0, 7, 30])
@pytest.mark.parametrize("sign", [1, -1])
def test_each_op_equals_torchvisions_v2_op_with_the_same_magnitude(op, bin_, sign):
    """Bit-identical to what v2.TrivialAugmentWide applies for that op and magnitude (uint8 in, uint8 out)."""
    magnitudes, signed = TRIVIAL_SPACE[op]
    values = magnitudes(31, *IMAGE.shape[-2:])
    magnitude = 0.0 if values is None else float(values[bin_]) * (sign if signed else 1)
    theirs = v2.TrivialAugmentWide()
    expected = theirs._apply_image_or_video_transform(IMAGE, op, magnitude, interpolation=theirs.interpolation,
                                                      fill=theirs._fill)
    assert torch.equal(apply_op(IMAGE, op, magnitude), expected)


def their_space(reference, policy: str) -> set:
    """Every (op, |magnitude|) torchvision's transform can apply (ops without a magnitude: the name alone)."""
    space = set()
    for op, (magnitudes_of, _) in reference._AUGMENTATION_SPACE.items():
        magnitudes = magnitudes_of(31, 20, 24)
        if magnitudes is None:
            space.add(op)
        else:
            chosen = magnitudes.tolist() if policy == "trivial" else [magnitudes[reference.magnitude].item()]
            space |= {(op, round(abs(float(m)), 5)) for m in chosen}
    return space


def magnitudes_are_none(reference, op):
    return reference._AUGMENTATION_SPACE[op][0](31, 20, 24) is None


@pytest.mark.parametrize("policy, reference", [("trivial", v2.TrivialAugmentWide()),
                                               ("rand", v2.RandAugment(num_ops=2, magnitude=9))])
def test_our_draws_cover_the_same_ops_and_magnitudes_as_torchvisions(policy, reference):
    """Our draws come from each sample's seed, not torch's generator: the same space, evenly covered."""
    ours = drawn_ops(np.arange(2000), policy, 20, 24, n=2, m=9)
    flat = [op if magnitudes_are_none(reference, op) else (op, round(abs(magnitude), 5))
            for ops in ours for op, magnitude in ops]
    assert {d if isinstance(d, str) else d[0] for d in flat} == set(reference._AUGMENTATION_SPACE)
    assert set(flat) <= their_space(reference, policy)
    counts = np.unique([d if isinstance(d, str) else d[0] for d in flat], return_counts=True)[1]
    assert counts.min() > 0.7 * counts.mean()  # each op about equally often
    signs = [np.sign(magnitude) for ops in ours for op, magnitude in ops if TRIVIAL_SPACE[op][1] and magnitude != 0]
    assert 0.45 < np.mean(np.array(signs) < 0) < 0.55
    if policy == "rand":
        assert all(len(ops) == 2 for ops in ours)


def test_random_erasing_equals_torchvisions_erase_on_the_drawn_box():
    images = torch.randn(64, 3, 20, 24, generator=torch.Generator().manual_seed(1))
    boxes = erasing_boxes(np.arange(64), 0.5, 20, 24)
    got = erased(images.clone(), torch.from_numpy(boxes))
    for image, result, (top, left, h, w) in zip(images, got, boxes.tolist(), strict=True):
        expected = TF.erase(image, top, left, h, w, torch.zeros(3, 1, 1)) if h else image
        assert torch.equal(result, expected)
    h, w = boxes[:, 2], boxes[:, 3]
    assert 0.3 < (h > 0).mean() < 0.7  # p = 0.5
    area = (h * w)[h > 0] / (20 * 24)
    assert area.min() >= 0.015 and area.max() <= 0.36  # v2's scale (0.02, 0.33), rounded to whole pixels
    assert ((boxes[:, 0] + h <= 20) & (boxes[:, 1] + w <= 24)).all()


def test_the_ops_do_not_move_the_crops_draws():
    """Off, the crop is today's; on, the crop is still today's (the ops draw at other counters)."""
    seeds = np.arange(50)
    before = crop_boxes(seeds, 18, 18)
    drawn_ops(seeds, "trivial", 16, 16), erasing_boxes(seeds, 0.5, 16, 16)
    after = crop_boxes(seeds, 18, 18)
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    assert auto_augment.AUTO_AUGMENT_COUNTERS > 23 and auto_augment.ERASING_COUNTERS > auto_augment.AUTO_AUGMENT_COUNTERS + 6


def finish_with(ops: SampleOps | None) -> Finish:
    return Finish((16, 16), (0.5,) * 3, (0.5,) * 3, augment=True, ops=ops)


@pytest.mark.parametrize("ops", [SampleOps("trivial"), SampleOps("rand", 2, 9), SampleOps("none", erasing=0.5),
                                 SampleOps("trivial", erasing=0.25)])
def test_a_sample_is_augmented_the_same_alone_or_in_a_batch(ops):
    pixels = torch.randint(0, 256, (6, 18, 18, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    seeds = torch.tensor([5, 11, 17, 2**61, 3, 9])
    finish = finish_with(ops)
    whole = finish(pixels, seeds)
    for i in range(6):
        assert torch.equal(finish(pixels[i:i + 1], seeds[i:i + 1])[0], whole[i])
    assert torch.equal(finish(pixels, seeds), whole)  # a function of the seeds alone
    assert not torch.equal(whole, finish_with(None)(pixels, seeds))  # the ops change something


def test_finish_applies_crop_then_ops_on_uint8_then_standardizes_then_erases():
    """The stated order, against a hand-written sample-at-a-time reference with torchvision's functions."""
    pixels = torch.randint(0, 256, (4, 18, 18, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    seeds = torch.tensor([1, 2, 3, 4])
    ops = SampleOps("rand", 2, 12, erasing=1.0)
    got = finish_with(ops)(pixels, seeds)
    boxes, mirrored = crop_boxes(seeds.numpy(), 18, 18)
    cropped = resized_crops(pixels.permute(0, 3, 1, 2).float(), torch.from_numpy(boxes), torch.from_numpy(mirrored),
                            (16, 16))  # crop + flip alone, 0..255
    for i in range(4):
        image = cropped[i].round().clamp(0, 255).to(torch.uint8)
        for op, magnitude in drawn_ops(seeds[i:i + 1].numpy(), "rand", 16, 16, 2, 12)[0]:
            image = apply_op(image, op, magnitude)
        expected = TF.normalize(image.float() / 255, [0.5] * 3, [0.5] * 3)
        top, left, h, w = erasing_boxes(seeds[i:i + 1].numpy(), 1.0, 16, 16)[0].tolist()
        expected = TF.erase(expected, top, left, h, w, torch.zeros(3, 1, 1))
        torch.testing.assert_close(got[i], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("argv", "expected"), [
    (["dataset.augment=basci"], ["dataset.augment='basci' is not known", "did you mean dataset.augment=basic?"]),
    (["dataset.auto_augment=trivail"], ["dataset.auto_augment='trivail'", "did you mean dataset.auto_augment=trivial?"]),
    (["dataset.auto_augment=rand", "dataset.rand_augment.m=31"], ["dataset.rand_augment.m=31", "0..30"]),
    (["dataset.rand_augment.n=0"], ["dataset.rand_augment.n=0", "Fix: dataset.rand_augment.n=2"]),
    (["dataset.random_erasing=1.5"], ["dataset.random_erasing=1.5", "probability"]),
    (["dataset.mixup.alpha=-1"], ["dataset.mixup.alpha=-1", ">= 0"]),
    (["dataset.mixup.switch_prob=2"], ["dataset.mixup.switch_prob=2", "probability"]),
    (["dataset.cutmix.alpah=1"], ["did you mean dataset.cutmix.alpha?"]),
    # found by an adversarial tester: settings that would be ignored, or would change the data's distribution
    (["dataset.rand_augment.n=3"], ["dataset.rand_augment.n=3", "only with dataset.auto_augment=rand"]),
    (["dataset.auto_augment=trivial", "dataset.rand_augment.m=3"], ["dataset.rand_augment.m=3", "it is trivial"]),
    (["dataset=synthetic", "dataset.auto_augment=trivial"], ["dataset.auto_augment='trivial'", "not pixels"]),
    (["dataset.mixup.alpha=0.2", "trainer.batch_size=8", "trainer.micro_batch_size=1"],
     ["trainer.micro_batch_size=1", "nothing to mix"]),
])
def test_a_bad_augmentation_setting_is_one_line(argv, expected, capsys):
    line = refused_in_one_line(argv, capsys)
    for text in expected:
        assert text in line, line


def test_with_the_new_settings_off_the_crops_are_those_drawn_before_they_existed():
    """Figures from batch_augment.py at the commit before dataset.auto_augment: the same crops, so a run with the
    new settings off trains the same weights as before them (Finish's other steps are unchanged when ops is None)."""
    boxes, mirrored = crop_boxes(np.array([0, 5, 2**61]), 18, 20)
    assert boxes.tolist() == [[0, 2, 18, 17], [0, 8, 13, 12], [0, 0, 18, 15]] and mirrored.tolist() == [False, True, True]
    assert auto_augment.uniforms(np.array([7]), 2).tolist() == [[0.3898297483912715, 0.01678829452815611]]


@pytest.mark.parametrize("extra", [["dataset=digits", "dataset.image_size=[8,8]", "model=mlp"],
                                   ["dataset.auto_augment=rand", "dataset.random_erasing=1.0",
                                    "dataset.mixup.alpha=0.4", "dataset=digits", "dataset.image_size=[8,8]"]])
def test_the_training_checks_see_the_training_split_without_augmentation(extra):
    """overfit_batch and input_independent learn clean views: the split as the evaluator sees it, no crop, no ops."""
    from runner.checks.setup import setup_for
    from runner.checks.training import without_augmentation
    from tests.conftest import compose_config

    setup = setup_for(compose_config(["dataset.augment=basic", *extra]), torch.device("cpu"))
    clean = without_augmentation(setup).splits["train"]
    train = setup.splits["train"]
    first = [train[0][0] for _ in range(2)]
    assert not torch.equal(*first)  # augmented: another view each time
    assert torch.equal(clean[0][0], clean[0][0]) and torch.equal(clean[0][0], train.images[0])


def test_the_training_checks_say_they_run_without_augmentation():
    from runner.checks.setup import setup_for
    from runner.checks.training import check_input_independent, check_overfit_batch
    from tests.conftest import compose_config

    setup = setup_for(compose_config(["dataset=digits", "dataset.image_size=[8,8]", "model=linear",
                                      "dataset.auto_augment=trivial", "checks.overfit_steps=5",
                                      "checks.baseline_steps=5"]), torch.device("cpu"))
    for check in (check_overfit_batch, check_input_independent):
        assert "(without augmentation)" in check(setup).figure


def test_the_report_and_the_check_warn_where_test_time_mirroring_changes_the_class():
    """evaluate.tta=flip averages mirrored views: on digits (a mirrored digit is another digit) the data report
    and augmentation_consistency name the mirror and the fix, without any training augmentation."""
    from runner.checks.data_report import augmentation_note
    from runner.checks.registry import CHECKS
    from runner.checks.setup import setup_for
    from tests.conftest import compose_config

    setup = setup_for(compose_config(["evaluate.tta=flip"]), torch.device("cpu"))  # digits, no augmentation
    result = CHECKS["augmentation_consistency"](setup)
    assert result.verdict == "FAIL" and "evaluate.tta=flip mirrors images" in result.fix, (result.figure, result.fix)
    assert "evaluate.tta=none" in result.fix
    assert "evaluate.tta=flip mirrors images" in " ".join(augmentation_note(setup))


def test_runners_auto_augment_is_compared_with_the_same_images_clean():
    """dataset.auto_augment is runner's own: the clean images are the training split built without it (paired)."""
    from runner.checks.augmentation import clean_source
    from runner.checks.setup import setup_for
    from tests.conftest import compose_config

    setup = setup_for(compose_config(["dataset.auto_augment=trivial", "dataset.random_erasing=0.5"]), torch.device("cpu"))
    source = clean_source(setup, [0, 1], [0, 1, 2])
    assert source.paired and source.flips == [] and "dataset.auto_augment=trivial" in source.owner


@pytest.mark.parametrize("dataset", [["dataset=digits", "dataset.image_size=[8,8]"], ["dataset=imagefolder"]])
def test_each_samples_views_come_from_its_seed_and_the_report_draws_augmented_views(dataset, tmp_path, monkeypatch):
    """auto_augment alone (no crop): a sample's view is a function of its loader seed (any order, any worker),
    and reading it without a seed (the data report's views) draws other views each time."""
    from runner.data import datasets
    from runner.data.loaders import SeededSamples
    from tests.conftest import compose_config, make_imagefolder

    if dataset == ["dataset=imagefolder"]:
        monkeypatch.setenv("RUNNER_CACHE", str(tmp_path / "cache"))
        root = make_imagefolder(tmp_path / "images", classes=2, per_class=4, size=(20, 20))
        dataset = [*dataset, f"dataset.root={root}", "dataset.image_size=[16,16]", "dataset.cache=memory"]
    cfg = compose_config([*dataset, "dataset.auto_augment=rand", "dataset.rand_augment.m=20",
                          "dataset.random_erasing=0.5"])
    train = datasets.build_splits(cfg.dataset)["train"]
    seeded = SeededSamples(train)
    keys = [(i, 1000 + i) for i in range(4)]
    forward = [seeded[key][0] for key in keys]
    backward = [seeded[key][0] for key in reversed(keys)][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward, strict=True))
    views = [train[0][0] for _ in range(4)]
    assert any(not torch.equal(views[0], other) for other in views[1:])
    clean = datasets.build_splits(compose_config(dataset).dataset)["train"]
    assert any(not torch.equal(view, clean[0][0]) for view in views)  # the ops change the views


@pytest.mark.parametrize("augment", ["dataset.augment=basic", "dataset.auto_augment=trivial"])
def test_test_time_mirroring_is_named_beside_training_augmentation(augment):
    """Training augments and the evaluation mirrors: the mirror is measured and the fix names evaluate.tta."""
    from runner.checks.registry import CHECKS
    from runner.checks.setup import setup_for
    from tests.conftest import compose_config

    result = CHECKS["augmentation_consistency"](setup_for(compose_config([augment, "evaluate.tta=flip+translate"]),
                                                          torch.device("cpu")))
    assert result.verdict == "FAIL" and "evaluate.tta=none" in result.fix, (result.figure, result.fix)
    assert "evaluate.tta=flip+translate" in result.fix
    if augment == "dataset.augment=basic":
        assert "dataset.augment=basic mirrors images" in result.fix
