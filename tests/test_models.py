"""Models: prime shapes, activation checkpointing, transfer-learning options."""

from __future__ import annotations

import pytest
import torch

from runner import models
from runner.common.errors import UserError
from tests.conftest import compose_config

PRIME = ["dataset=synthetic", "dataset.num_classes=7", "dataset.channels=3", "dataset.image_size=[11,13]"]


@pytest.mark.parametrize("model", ["linear", "mlp", "lenet", "convnet", "resnet18", "resnet50"])
def test_prime_shapes_give_one_row_of_logits_per_sample(model):
    net = models.build(compose_config([*PRIME, f"model={model}"]).model).eval()
    x = torch.randn(3, 3, 11, 13)
    logits = net(x)
    assert logits.shape == (3, 7)
    # each row depends only on its own sample (no mixing across the batch)
    torch.testing.assert_close(net(x[1:2]), logits[1:2], rtol=1e-4, atol=1e-5)


def test_flagship_convnet_architecture():
    net = models.convnet(num_classes=102, in_channels=3)
    x = torch.randn(2, 3, 128, 128)
    assert net.stem[0].kernel_size == (11, 11) and net.stem[0].stride == (2, 2)
    assert [b.conv2.out_channels for b in net.blocks] == [64, 128, 256, 512]
    assert all(isinstance(m, torch.nn.GroupNorm) and m.num_groups == 1 for m in (net.blocks[0].norm1, net.blocks[0].norm2))
    features = net.blocks(net.stem(x))
    assert features.shape == (2, 512, 4, 4)  # 128 -> 64 (stem) -> 32, 16, 8, 4
    assert net(x).shape == (2, 102)


@pytest.mark.parametrize("make", [
    lambda flag: models.convnet(7, 3, channels=4, n_blocks=2, activation_checkpointing=flag),
    lambda flag: models.resnet(18, 7, activation_checkpointing=flag),
])
def test_activation_checkpointing_gives_the_same_gradients(make):
    torch.manual_seed(0)
    plain = make(False)
    checkpointed = make(True)
    checkpointed.load_state_dict(plain.state_dict())  # same keys with and without checkpointing
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([0, 3, 6])
    grads = []
    for net in (plain, checkpointed):
        net.train()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        grads.append([p.grad for p in net.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_freeze_backbone_trains_only_the_head():
    net = models.resnet(18, 7, freeze="backbone")
    trainable = [name for name, p in net.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"]


def test_weights_path_loads_a_backbone_and_keeps_a_new_head(tmp_path):
    source = models.resnet(18, 10)
    torch.save(source.state_dict(), tmp_path / "weights.pt")
    net = models.resnet(18, 7, weights_path=str(tmp_path / "weights.pt"))
    torch.testing.assert_close(net.conv1.weight, source.conv1.weight)
    assert net.fc.out_features == 7


def test_weights_path_errors_are_clear(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        models.resnet(18, 7, weights_path=str(tmp_path / "missing.pt"))
    torch.save(models.convnet(7, 3).state_dict(), tmp_path / "convnet.pt")
    with pytest.raises(UserError, match="does not fit this model"):
        models.resnet(18, 7, weights_path=str(tmp_path / "convnet.pt"))


def test_output_layer_is_the_last_layer():
    assert models.output_layer(models.convnet(7, 3)).out_channels == 7
    assert models.output_layer(models.mlp(7, 3, [4, 4])).out_features == 7
    assert models.output_layer(models.resnet(18, 7)).out_features == 7
