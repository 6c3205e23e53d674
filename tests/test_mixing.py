"""dataset.mixup / dataset.cutmix: soft targets summing to 1, the stated mixed images, timm's draws, exact resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from runner.common.errors import UserError
from runner.data.mixing import Mixing, mixing_of
from runner.training.losses import cross_entropy, refuse_loss_without_soft_targets
from tests.conftest import TINY, assert_identical, checkpoint_weights, compose_config

X = torch.randn(6, 3, 10, 12, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 1, 2, 3, 4, 0])


@pytest.mark.parametrize("seed", range(5))
def test_mixup_is_the_stated_convex_combination_of_the_batch_and_its_reverse(seed):
    mixing = Mixing(5, mixup_alpha=0.4)
    lam, box = mixing.draw(seed, 10, 12)
    assert box is None and 0 <= lam <= 1
    assert lam == np.random.Generator(np.random.PCG64(seed)).beta(0.4, 0.4)  # one Beta(alpha, alpha) draw
    x, targets = mixing(X, Y, seed)
    torch.testing.assert_close(x, lam * X + (1 - lam) * X.flip(0), rtol=0, atol=1e-6)
    torch.testing.assert_close(targets.sum(1), torch.ones(6))
    expected = lam * F.one_hot(Y, 5).float() + (1 - lam) * F.one_hot(Y.flip(0), 5).float()
    torch.testing.assert_close(targets, expected)


@pytest.mark.parametrize("seed", range(5))
def test_cutmix_pastes_a_box_of_the_reverse_and_weighs_the_targets_by_its_area(seed):
    mixing = Mixing(5, cutmix_alpha=1.0)
    lam, (top, bottom, left, right) = mixing.draw(seed, 10, 12)
    x, targets = mixing(X, Y, seed)
    inside = torch.zeros(10, 12, dtype=torch.bool)
    inside[top:bottom, left:right] = True
    assert torch.equal(x[..., inside], X.flip(0)[..., inside]) and torch.equal(x[..., ~inside], X[..., ~inside])
    assert math.isclose(lam, 1 - inside.sum().item() / inside.numel(), abs_tol=1e-12)  # lam corrected to the box
    torch.testing.assert_close(targets.sum(1), torch.ones(6))
    torch.testing.assert_close(targets[:, Y[0]][0], torch.tensor(lam + (1 - lam) * float(Y[-1] == Y[0])))


def test_the_box_follows_timms_rand_bbox(monkeypatch):
    """The same box timm draws for the same lam and centre."""
    from timm.data.mixup import rand_bbox

    for seed in range(20):
        rng = np.random.Generator(np.random.PCG64(seed))
        lam = rng.beta(1.0, 1.0)
        cy, cx = int(rng.integers(0, 10)), int(rng.integers(0, 12))
        centres = iter([cy, cx])
        monkeypatch.setattr(np.random, "randint", lambda *args, centres=centres, **kwargs: next(centres))
        yl, yh, xl, xh = rand_bbox((10, 12), lam)
        assert Mixing(5, cutmix_alpha=1.0).draw(seed, 10, 12)[1] == (yl, yh, xl, xh)


def test_switch_prob_chooses_cutmix_that_often():
    mixing = Mixing(5, mixup_alpha=0.2, cutmix_alpha=1.0, switch_prob=0.3)
    share = np.mean([mixing.draw(seed, 10, 12)[1] is not None for seed in range(2000)])
    assert 0.26 < share < 0.34


def test_settings_off_give_no_mixing():
    assert mixing_of(compose_config(TINY).dataset) is None
    mixing = mixing_of(compose_config([*TINY, "dataset.mixup.alpha=0.2", "dataset.cutmix.alpha=1"]).dataset)
    assert mixing == Mixing(7, 0.2, 1.0, 0.5)


def test_runners_cross_entropy_takes_soft_targets_with_label_smoothing():
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    _, soft = Mixing(5, mixup_alpha=0.4)(X, Y, 3)
    expected = -(soft * 0.9 + 0.1 / 5).mul(logits.log_softmax(1)).sum(1)  # timm's smoothed, mixed targets
    torch.testing.assert_close(cross_entropy(logits, soft, label_smoothing=0.1), expected)


def hard_labels_only(logits, targets):
    return F.nll_loss(logits.log_softmax(1), targets, reduction="none")


def test_a_loss_that_cannot_take_soft_targets_is_refused_in_one_line():
    cfg = compose_config([*TINY, "dataset.mixup.alpha=0.2", "loss._target_=tests.test_mixing.hard_labels_only",
                          "~loss.label_smoothing"])
    with pytest.raises(UserError) as refused:
        refuse_loss_without_soft_targets(cfg)
    line = str(refused.value)
    assert "\n" not in line and "loss tests.test_mixing.hard_labels_only cannot take the soft targets" in line
    assert "Fix:" in line and "dataset.mixup.alpha=0" in line
    refuse_loss_without_soft_targets(compose_config([*TINY, "dataset.mixup.alpha=0.2"]))  # runner's own: fine
    refuse_loss_without_soft_targets(compose_config([*TINY, "loss._target_=tests.test_mixing.hard_labels_only",
                                                     "~loss.label_smoothing"]))  # mixing off: not asked


# on digits: auto_augment works on pixels, which synthetic's values are not (refused there)
DIGITS = ["dataset=digits", "dataset.subset=30", "trainer.epochs=2", "trainer.batch_size=12", "trainer.micro_batch_size=4",
          "checkpoint.every_epochs=1", "evaluate.after_training=false", "trainer.deterministic=true"]
MIXED = [*DIGITS, "dataset.mixup.alpha=0.4", "dataset.cutmix.alpha=1.0", "dataset.auto_augment=trivial",
         "dataset.random_erasing=0.5"]


def test_mixed_training_resumes_bit_identical_from_a_stop_mid_epoch(tmp_path, monkeypatch):
    """mixup + cutmix + trivial + erasing on: stopped in epoch 2, rerun, the same weights as straight through."""
    from runner.common.stop_signals import Preempted
    from runner.run import train_and_evaluate
    from tests.conftest import stop_at_step

    train_and_evaluate(compose_config(MIXED), tmp_path / "straight")
    with monkeypatch.context() as patch:
        stop_at_step(patch, 3 + 2)  # in epoch 2 (30 samples in batches of 12: 3 updates an epoch)
        with pytest.raises(Preempted):
            train_and_evaluate(compose_config(MIXED), tmp_path / "resumed")
    train_and_evaluate(compose_config(MIXED), tmp_path / "resumed")
    mixed = checkpoint_weights(tmp_path / "straight", 2)
    assert_identical(mixed, checkpoint_weights(tmp_path / "resumed", 2))
    train_and_evaluate(compose_config(DIGITS), tmp_path / "plain")
    assert any(not mixed[k].equal(v) for k, v in checkpoint_weights(tmp_path / "plain", 2).items())  # it did mix


def test_tensorboards_first_batch_shows_the_mixed_views_and_the_log_names_the_accuracy(tmp_path, monkeypatch, caplog):
    import logging

    from runner.data.datasets import stable_seed
    from runner.run import train_and_evaluate
    from runner.training import meter

    seen = []
    monkeypatch.setattr(meter, "log_first_batch", lambda writer, x, mean, std: seen.append(x))
    train_and_evaluate(compose_config([*TINY, "trainer.epochs=1"]), tmp_path / "plain")
    with caplog.at_level(logging.INFO):
        train_and_evaluate(compose_config([*TINY, "trainer.epochs=1", "dataset.mixup.alpha=0.4"]), tmp_path / "mixed")
    plain, mixed = seen
    lam, _ = Mixing(7, 0.4).draw(stable_seed(0, 0, 0, 0), 11, 13)  # trainer.seed 0, update 0, rank 0, micro-batch 0
    torch.testing.assert_close(mixed, lam * plain + (1 - lam) * plain.flip(0), rtol=0, atol=1e-5)
    assert "accuracy (dominant label, mixup/cutmix)" in caplog.text


def test_the_data_report_shows_mixed_pairs_with_their_weights():
    from runner.checks.data_report import mixing_figure
    from runner.checks.setup import setup_for

    names = [str(c) for c in range(7)]
    assert mixing_figure(setup_for(compose_config(TINY), torch.device("cpu")), names) == {}
    setup = setup_for(compose_config([*TINY, "dataset.cutmix.alpha=1.0"]), torch.device("cpu"))
    figures = mixing_figure(setup, names)
    figure, caption = figures["mixed"]
    assert "cutmix" in caption and "dominant label" in caption
    titles = [axis.get_title() for axis in figure.axes if axis.get_title()]
    assert len(titles) == 8 and all("%" in title for title in titles), titles
