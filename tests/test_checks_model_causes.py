"""The model, loss and label checks name the cause (issue 23, items 1 and 3): tensors frozen at their
random initial values, a clipped or negated loss, labels wrapped by a cast, BatchNorm after a bias or
a dropout. Each planted bug asserts the verdict and the words of its cause; healthy controls beside it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from runner.checks.registry import CHECKS
from runner.checks.setup import Setup, setup_for
from tests.conftest import compose_config
from tests.test_checks_causes import SMALL, small_setup, with_model

CHANNELS, HEIGHT, WIDTH, CLASSES = 2, 5, 7, 10  # the small setup's synthetic images


@pytest.fixture(scope="module")
def small():
    return small_setup()


def words_in(text: str, words: list[str]) -> list[str]:
    """The words missing from text (an empty list when the fix names the cause)."""
    return [word for word in words if word not in text]


# ---- gradients_flow: tensors frozen at their initial (random) values ----

class FrozenHiddenMLP(nn.Module):
    """A planted bug: the hidden layers are frozen in the model's own __init__ at their random values."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(CHANNELS * HEIGHT * WIDTH, 32), nn.ReLU(),
                                    nn.Linear(32, 32), nn.ReLU())
        self.out = nn.Linear(32, CLASSES)
        self.hidden.requires_grad_(False)

    def forward(self, x):
        return self.out(self.hidden(x))


class FrozenFeaturesCNN(nn.Module):
    """The same bug in a CNN: its convolutions never learn."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(CHANNELS, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                      nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, CLASSES)
        self.features.requires_grad_(False)

    def forward(self, x):
        return self.head(self.features(x))


class FixedEdgeFilter(nn.Module):
    """Healthy: a frozen tensor set to chosen values (an edge filter), the same whatever the seed."""

    def __init__(self):
        super().__init__()
        self.edges = nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1, groups=CHANNELS, bias=False)
        with torch.no_grad():
            self.edges.weight.copy_(torch.tensor([[-1.0, 0, 1]] * 3).expand(CHANNELS, 1, 3, 3))
        self.edges.requires_grad_(False)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(CHANNELS * HEIGHT * WIDTH, CLASSES))

    def forward(self, x):
        return self.head(self.edges(x))


@pytest.mark.parametrize("plant, frozen, trainable", [
    (FrozenHiddenMLP, "hidden.1.weight", "out.weight"),
    (FrozenFeaturesCNN, "features.0.weight", "head.weight"),
])
def test_tensors_frozen_at_their_random_initial_values_fail_gradients_flow(small, plant, frozen, trainable):
    result = CHECKS["gradients_flow"](with_model(small, lambda m: plant()))
    assert result.verdict == "FAIL", result
    assert not words_in(result.fix, ["4 tensors frozen at their initial values", frozen, "can only train", trainable,
                                     "requires_grad"]), result.fix


def test_a_frozen_tensor_set_to_chosen_values_passes_gradients_flow(small):
    result = CHECKS["gradients_flow"](with_model(small, lambda m: FixedEdgeFilter()))
    assert result.verdict == "PASS" and "1 frozen" in result.figure, result


# ---- a loss clipped instead of the gradients; a negated loss ----

BAD_LOSS = "loss._target_=tests.byo_bad_losses.{}"


def loss_setup(target: str, *overrides) -> Setup:
    return small_setup(target, "~loss.label_smoothing", *overrides)


def test_a_loss_clipped_at_1_is_named_in_gradients_flow_not_dead_parameters():
    result = CHECKS["gradients_flow"](loss_setup(BAD_LOSS.format("clipped_at_1")))
    assert result.verdict == "FAIL", result
    assert not words_in(result.fix, ["loss is clipped at 1", "no gradient", "trainer.grad_clip_norm"]), result.fix
    assert "dead or unused" not in result.fix


def test_a_loss_clipped_at_3_warns_in_loss_at_init_that_samples_give_no_gradient():
    result = CHECKS["loss_at_init"](loss_setup(BAD_LOSS.format("clipped_at_3")))
    assert result.verdict in ("WARN", "FAIL"), result
    assert not words_in(result.fix, ["exactly zero gradient", "clipped at 3", "ignored", "trainer.grad_clip_norm"]), \
        result.fix


def test_a_negated_loss_fails_loss_at_init_for_its_sign():
    result = CHECKS["loss_at_init"](loss_setup(BAD_LOSS.format("negated")))
    assert result.verdict == "FAIL", result
    assert not words_in(result.fix, ["rewards wrong answers", "sign"]), result.fix
    assert "ln(10) = 2.303" in result.expected, result.expected  # cross-entropy's anchor, whatever the loss


def multi_margin(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Healthy: a hinge loss gives no gradient to samples already right by a margin (not to wrong ones)."""
    return F.multi_margin_loss(logits, targets, reduction="none")


@pytest.mark.parametrize("loss", [
    ["loss.label_smoothing=0.2"],
    ["loss._target_=tests.byo_losses.focal", "~loss.label_smoothing"],
    ["loss._target_=tests.byo_losses.mean_cross_entropy", "~loss.label_smoothing"],
    ["loss._target_=tests.test_checks_model_causes.multi_margin", "~loss.label_smoothing"],
])
def test_healthy_losses_pass_loss_at_init(loss):
    result = CHECKS["loss_at_init"](small_setup(*loss))
    assert result.verdict == "PASS", result


# ---- labels wrapped by a cast ----

def labels_setup(labels: torch.Tensor, num_classes: int) -> Setup:
    """The small setup's images, with these labels (train and val alike) and num_classes classes."""
    cfg = compose_config([*SMALL, f"dataset.num_classes={num_classes}"])
    images = torch.randn(len(labels), CHANNELS, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))
    splits = {"train": TensorDataset(images, labels), "val": TensorDataset(images + 0.5, labels)}
    return Setup(cfg, splits, setup_for(cfg, torch.device("cpu")).make_model)


ALL_300 = torch.arange(300).repeat(3)  # 300 classes, 3 samples each


@pytest.mark.parametrize("dtype, name, words", [
    (torch.uint8, "uint8", ["classes 0..43 doubled", "256..299 empty", "8-bit", "uint8", "int64"]),
    (torch.int8, "int8", ["negative", "8-bit", "int8", "int64"]),
])
def test_labels_wrapped_by_a_cast_are_named_in_splits(dtype, name, words):
    setup = labels_setup(ALL_300.to(dtype), 300)
    result = CHECKS["splits"](setup)
    assert result.verdict == "FAIL", result
    assert not words_in(result.fix, words), result.fix


def test_output_bias_does_not_suggest_a_prior_that_builds_a_wrap_in():
    result = CHECKS["output_bias"](labels_setup(ALL_300.to(torch.uint8).long(), 300))
    assert "init_output_bias=prior" not in result.fix and "wrapped" in result.fix, result


def test_classes_missing_without_a_wrap_are_not_called_a_cast():
    from runner.checks.data import wrapped_labels

    labels = torch.arange(256).repeat(3)  # classes 256..299 simply absent: nothing doubled
    assert wrapped_labels(torch.bincount(labels, minlength=300)) is None
    assert wrapped_labels(torch.bincount(ALL_300, minlength=300)) is None
    result = CHECKS["splits"](labels_setup(labels, 300))
    assert "no training example" in result.fix and "cast" not in result.fix, result


# ---- normalization: the order of bias, dropout and BatchNorm ----

def conv_block(*layers: nn.Module) -> nn.Module:
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, CLASSES))


ORDERS = {
    "bias before BatchNorm": (lambda: conv_block(nn.Conv2d(CHANNELS, 8, 3), nn.BatchNorm2d(8), nn.ReLU()),
                              ["0 has a bias", "BatchNorm 1 removes", "bias=False"]),
    "dropout before BatchNorm": (lambda: conv_block(nn.Conv2d(CHANNELS, 8, 3, bias=False), nn.ReLU(), nn.Dropout(0.5),
                                                    nn.BatchNorm2d(8)),
                                 ["dropout 2 before BatchNorm 3", "train and eval", "after"]),
}


@pytest.mark.parametrize("order", ORDERS)
def test_batchnorm_after_a_bias_or_a_dropout_warns_naming_the_order(small, order):
    plant, words = ORDERS[order]
    result = CHECKS["normalization"](with_model(small, lambda m: plant()))
    assert result.verdict == "WARN", result
    assert not words_in(result.fix, words), result.fix


def test_the_usual_order_and_the_stock_models_get_no_warning_from_the_order(small):
    usual = conv_block(nn.Conv2d(CHANNELS, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5))
    assert CHECKS["normalization"](with_model(small, lambda m: usual)).verdict == "PASS"
    for model in ("convnet", "lenet", "resnet18", "mlp"):
        setup = setup_for(compose_config([f"model={model}"]), torch.device("cpu"))
        result = CHECKS["normalization"](setup)
        assert result.verdict == "PASS", (model, result)


def test_negative_labels_reach_splits_instead_of_crashing_the_setup():
    """class_counts (what output_bias and the setup count with) took torch.bincount of negative labels: it raised."""
    from runner.checks.setup import class_counts

    counts = class_counts(labels_setup(ALL_300.to(torch.int8), 300))
    assert int(counts.sum()) == int((ALL_300.to(torch.int8) >= 0).sum())


def test_zero_initialised_residual_branches_are_not_dead_parameters():
    """timm's ResNets (as torchvision's with zero_init_residual) start each block's last norm scale at 0 (Goyal et
    al. 2017): the branch's earlier layers get exactly zero gradient at the first update, then learn. Not dead."""
    setup = setup_for(compose_config(["dataset=synthetic", "dataset.image_size=[16,16]", "dataset.channels=3",
                                      "dataset.train_size=32", "model=timm", "model.name=test_resnet"]),
                      torch.device("cpu"))
    result = CHECKS["gradients_flow"](setup)
    assert result.verdict == "PASS", (result.figure, result.fix)


def test_a_parameter_whose_gradient_stays_zero_is_still_dead():
    class Dead(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.unused_scale = inner, nn.Parameter(torch.zeros(4))

        def forward(self, x):
            return self.inner(x) + 0 * self.unused_scale.sum()
    result = CHECKS["gradients_flow"](with_model(small_setup(), Dead))
    assert result.verdict == "FAIL" and "unused_scale: zero gradient" in result.fix
