"""model.drop_rate and model.drop_path_rate: spatial dropout before the classifier and stochastic depth on the
residual branches of runner's ConvNet, timm's own for timm models; off by default, refused outside [0, 1)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torchvision.ops import stochastic_depth

from runner import models
from runner.common.errors import UserError
from runner.config.schema import validate
from tests.conftest import TINY, compose_config


def fresh_convnet(seed: int = 0, **settings) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.convnet(num_classes=5, in_channels=3, channels=4, n_blocks=2, **settings)


def test_the_knobs_change_no_weight_and_no_initial_value():
    plain, regularized = fresh_convnet(), fresh_convnet(drop_rate=0.3, drop_path_rate=0.4)
    assert plain.state_dict().keys() == regularized.state_dict().keys()
    for key, value in plain.state_dict().items():
        assert torch.equal(value, regularized.state_dict()[key]), key


def test_off_by_default_a_training_forward_draws_no_random_numbers_and_equals_the_plain_model():
    plain, default = fresh_convnet(), fresh_convnet(drop_rate=0.0, drop_path_rate=0.0)
    x = torch.randn(6, 3, 16, 16)
    torch.manual_seed(1)
    before = torch.get_rng_state()
    out = default.train()(x)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(out, plain.train()(x))


def test_in_eval_mode_both_are_the_identity():
    plain, regularized = fresh_convnet(), fresh_convnet(drop_rate=0.5, drop_path_rate=0.5)
    x = torch.randn(6, 3, 16, 16)
    assert torch.equal(plain.eval()(x), regularized.eval()(x))


def test_stochastic_depth_drops_whole_residual_branches_per_sample_in_training():
    torch.manual_seed(0)
    block = models.ResidualBlock(3, 4, drop_path_rate=0.5).train()
    x = torch.randn(64, 3, 8, 8)
    branch = block.norm2(block.conv2(torch.relu(block.norm1(block.conv1(x)))))
    skip = block.skip(x)
    dropped, kept = torch.relu(skip), torch.relu(branch / 0.5 + skip)
    torch.manual_seed(1)
    out = block(x)
    was_dropped = torch.tensor([torch.allclose(o, d, atol=1e-6) for o, d in zip(out, dropped, strict=True)])
    was_kept = torch.tensor([torch.allclose(o, k, atol=1e-5) for o, k in zip(out, kept, strict=True)])
    assert bool((was_dropped ^ was_kept).all()), "each sample's branch is either dropped whole or kept whole"
    assert 10 < int(was_dropped.sum()) < 54  # about half of 64
    torch.manual_seed(1)  # the reference: torchvision's stochastic_depth, row mode, with the same random numbers
    assert torch.allclose(out, torch.relu(stochastic_depth(branch, 0.5, "row", True) + skip), atol=1e-6)


def test_the_rate_grows_linearly_with_depth_to_drop_path_rate():
    model = models.convnet(num_classes=5, in_channels=3, channels=4, n_blocks=4, drop_path_rate=0.2)
    assert [block.drop_path_rate for block in model.blocks] == pytest.approx([0.05, 0.1, 0.15, 0.2])


def test_drop_rate_zeroes_whole_feature_channels_before_the_classifier():
    model = fresh_convnet(drop_rate=0.5).train()
    features = torch.randn(1, model.head.in_channels, 3, 3)
    torch.manual_seed(0)
    dropped = model.dropout(features)
    zero = (dropped == 0).flatten(2).all(dim=2)  # a channel dropped: all its positions
    assert bool(((dropped == 0).flatten(2).any(dim=2) == zero).all())
    assert 0 < int(zero.sum()) < model.head.in_channels


def test_an_old_checkpoints_config_without_the_keys_still_builds_and_loads():
    from runner.common import checkpoint_files

    old = {"_target_": "runner.models.convnet", "num_classes": 5, "in_channels": 3, "channels": 4, "n_blocks": 2,
           "activation_checkpointing": False}
    config = {"model": old, "dataset": {"num_classes": 5}, "trainer": {"micro_batch_size": 2, "num_workers": 0}}
    assert checkpoint_files.check_config(config) is None
    model = models.build(OmegaConf.create(old))
    model.load_state_dict(fresh_convnet().state_dict())


def test_timm_models_get_timm_s_dropout_and_drop_path():
    from timm.layers import DropPath

    model = models.timm_model("resnet18", num_classes=3, in_channels=3, drop_rate=0.2, drop_path_rate=0.1)
    rates = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    assert rates and max(rates) == pytest.approx(0.1)
    assert model.drop_rate == pytest.approx(0.2)
    plain = models.timm_model("resnet18", num_classes=3, in_channels=3)
    assert not any(isinstance(m, DropPath) for m in plain.modules())


@pytest.mark.parametrize("override, key", [
    (["model=convnet", "model.drop_rate=1.0"], "model.drop_rate"),
    (["model=convnet", "model.drop_path_rate=-0.1"], "model.drop_path_rate"),
    (["model=timm", "model.name=resnet18", "model.drop_path_rate=1.5"], "model.drop_path_rate"),
    (["model=torchvision", "model.name=resnet18", "+model.drop_path_rate=0.1"], "model.drop_path_rate"),
])
def test_a_rate_outside_0_1_or_a_model_without_it_is_refused_in_one_line(override, key):
    with pytest.raises(UserError) as refused:
        validate(compose_config([*TINY, *override]))
    message = str(refused.value)
    assert message.startswith(key) and "Fix:" in message and "\n" not in message


def test_torchvision_maps_the_knobs_where_the_architecture_has_them():
    model = models.torchvision_model("efficientnet_b0", num_classes=3, in_channels=3, drop_rate=0.3,
                                     drop_path_rate=0.1)
    assert model.classifier[0].p == pytest.approx(0.3)
    from torchvision.ops import StochasticDepth

    rates = [m.p for m in model.modules() if isinstance(m, StochasticDepth)]
    assert max(rates) < 0.1 + 1e-9 and max(rates) > 0.05
