"""Any image model by name (model=timm, model=torchvision): heads, stems, weights files, hub caches, names, preprocessing.

No download: the pretrained weights are made here (a model built with pretrained=False, saved as
safetensors, or put where the hub caches keep them).
"""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from runner import models
from runner.common.errors import UserError
from runner.config.schema import validate
from runner.models import weights
from runner.models.__main__ import main as list_models
from runner.models.preprocessing import weights_preprocessing
from tests.conftest import TINY, compose_config, run_cli

PRIME_BATCH = torch.randn(3, 3, 37, 41)  # prime sizes: a wrong reshape cannot hide behind equal sizes


def experiment_timm_names() -> list[str]:
    """The timm names that the model presets and the experiments use."""
    from tests.conftest import options

    found = {compose_config(["model=timm"]).model.name}
    for experiment in options("experiment"):
        model = compose_config([f"+experiment={experiment}"]).model
        if model.get("_target_") == "runner.models.timm_model":
            found.add(model.name)
    return sorted(found)


@pytest.mark.parametrize("name", [*experiment_timm_names(), "convnext_atto", "efficientnet_b0"])
def test_every_timm_family_used_builds_and_gives_a_row_of_logits_per_image(name):
    torch.manual_seed(0)
    net = models.timm_model(name, num_classes=7, in_channels=3).eval()
    assert net(PRIME_BATCH).shape == (3, 7)
    assert models.output_layer(net).weight.shape[0] == 7 and net.pretrained_weights is None


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "squeezenet1_1", "regnet_y_400mf", "efficientnet_b0"])
def test_torchvision_families_get_a_new_head(name):
    net = models.torchvision_model(name, num_classes=7, in_channels=3).eval()
    assert net(PRIME_BATCH).shape == (3, 7)
    assert models.output_layer(net) is net.get_submodule(net.head_name)


def test_freeze_backbone_trains_only_the_new_head():
    net = models.timm_model("resnet18", 7, 3, freeze="backbone")
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    net = models.torchvision_model("mobilenet_v3_small", 7, 3, freeze="backbone")
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["classifier.3.weight", "classifier.3.bias"]


def saved(tmp_path, net: torch.nn.Module, name: str = "weights.safetensors"):
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    return path


def test_weights_path_loads_the_body_exactly_and_the_head_is_new(tmp_path):
    torch.manual_seed(1)
    source = models.timm_model("resnet18", num_classes=10, in_channels=3)
    path = saved(tmp_path, source)
    net = models.timm_model("resnet18", num_classes=7, in_channels=3, weights_path=str(path))
    loaded, given = net.state_dict(), source.state_dict()
    for key in given:
        if not key.startswith("fc."):
            assert torch.equal(loaded[key], given[key]), key
    assert loaded["fc.weight"].shape == (7, 512)
    assert net.pretrained_weights == {"name": "resnet18", "source": "file", "file": str(path.resolve()),
                                      "sha256": weights.sha256_of(path)}
    # a runner checkpoint's "model" entry, and torchvision's resnet18 (same keys), load alike
    torch.save({"format_version": 1, "model": source.state_dict()}, tmp_path / "epoch-0001.pt")
    other = models.torchvision_model("resnet18", 7, 3, weights_path=str(tmp_path / "epoch-0001.pt"))
    assert torch.equal(other.conv1.weight, source.conv1.weight)


def test_a_one_channel_dataset_sums_the_pretrained_stem_filters(tmp_path):
    source = models.timm_model("resnet18", num_classes=10, in_channels=3)
    path = saved(tmp_path, source)
    net = models.timm_model("resnet18", num_classes=7, in_channels=1, weights_path=str(path))
    by_hand = source.conv1.weight[:, 0:1] + source.conv1.weight[:, 1:2] + source.conv1.weight[:, 2:3]
    torch.testing.assert_close(net.conv1.weight, by_hand)
    # a grey image x answers as the RGB image (x, x, x) did: the point of the rule
    grey = torch.randn(3, 1, 37, 41)
    torch.testing.assert_close(net.conv1(grey), source.conv1(grey.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)
    tv = models.torchvision_model("resnet18", 7, 1, weights_path=str(path))
    torch.testing.assert_close(tv.conv1.weight, by_hand)


def test_torchvision_weights_from_the_torch_hub_cache_adapt_the_stem_and_are_recorded(tmp_path, monkeypatch):
    import torchvision

    member = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    cached = tmp_path / "torch" / "hub" / "checkpoints" / member.url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    source = torchvision.models.resnet18()
    torch.save(source.state_dict(), cached)  # what torchvision's own download would have left there
    monkeypatch.setenv("RUNNER_WEIGHTS", str(tmp_path))
    monkeypatch.delenv("TORCH_HOME", raising=False)
    net = models.torchvision_model("resnet18", 7, 1, weights="IMAGENET1K_V1")
    torch.testing.assert_close(net.conv1.weight, source.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(net.layer4[1].conv2.weight, source.layer4[1].conv2.weight) and net.fc.out_features == 7
    assert net.pretrained_weights == {"name": "resnet18 ResNet18_Weights.IMAGENET1K_V1", "source": "torchvision",
                                      "file": str(cached.resolve()), "sha256": weights.sha256_of(cached)}


def test_a_file_of_another_architecture_is_refused_naming_keys_and_their_part(tmp_path):
    path = saved(tmp_path, models.torchvision_model("mobilenet_v3_small", 10, 3))
    with pytest.raises(UserError) as refused:
        models.timm_model("resnet18", 7, 3, weights_path=str(path))
    message = str(refused.value)
    assert "\n" not in message and "does not fit this model" in message and "Fix:" in message
    assert "the body's conv1.weight is missing from the file" in message
    path = saved(tmp_path, models.torchvision_model("resnet18", 10, 3), "resnet18.safetensors")
    with pytest.raises(UserError, match=r"the body's features\.0\.0\.weight is missing"):
        models.torchvision_model("mobilenet_v3_small", 7, 3, weights_path=str(path))


def test_the_file_head_of_another_architecture_is_named_as_the_head():
    problems = weights.fit_problems({"body.weight": torch.zeros(1), "classifier.3.weight": torch.zeros(1)},
                                    {"body.weight": torch.zeros(1)}, ("fc.", "classifier.3."))
    assert problems == ["the head's classifier.3.weight in the file is not in the model"]


@pytest.mark.parametrize(("overrides", "expected"), [
    (["model=timm", "model.name=convnxt_tiny"],
     "model.name='convnxt_tiny' is not a timm model. Fix: one of convnext_tiny"),
    (["model=torchvision", "model.name=resnet05"], "model.name='resnet05' is not a torchvision model. Fix: one of"),
    (["model=torchvision", "model.name=resnet50", "model.weights=IMAGENET1K_V3"],
     "model.weights='IMAGENET1K_V3' is not a weights of torchvision's resnet50 (ResNet50_Weights). "
     "Fix: model.weights=IMAGENET1K_V1|IMAGENET1K_V2|DEFAULT"),
    (["model=timm", "model.name=resnet18", "model.freeze=head"], "model.freeze='head' is not known"),
    (["model=timm", "model.pretrained=true", "model.weights_path=w.pt"], "is a second source of weights"),
    (["model=timm", "model.weights_path=no-such-file.safetensors"], "does not exist"),
])
def test_bad_names_and_weights_are_refused_at_validation_in_one_line(overrides, expected):
    with pytest.raises(UserError) as refused:
        validate(compose_config([*TINY, *overrides]))
    assert expected in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.slow
def test_a_typo_name_exits_2_in_one_line_and_writes_nothing(tmp_path):
    run_dir = tmp_path / "outputs" / "run"
    result = run_cli([*TINY, "model=timm", "model.name=convnxt_tiny", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "model.name='convnxt_tiny' is not a timm model. Fix: one of convnext_tiny" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not run_dir.exists() and not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_pretrained_with_no_internet_and_an_empty_cache_is_one_line(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", constants.HF_HUB_CACHE)  # restored after the test
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", constants.HF_HUB_OFFLINE)
    for variable in ("HF_HUB_CACHE", "TORCH_HOME", "RUNNER_WEIGHTS"):
        monkeypatch.setenv(variable, str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as refused:
        models.timm_model("resnet18.a1_in1k", 7, 3, pretrained=True)
    message = str(refused.value)
    assert "\n" not in message and "timm resnet18.a1_in1k" in message
    assert str(tmp_path / "empty" / "huggingface") in message and str(tmp_path / "empty" / "torch") in message
    assert "python -m runner.fetch_weights model=timm model.name=resnet18.a1_in1k" in message
    assert "RUNNER_WEIGHTS=DIR" in message and "model.weights_path=FILE" in message


def test_the_weights_preprocessing_comes_without_a_download(tmp_path):
    timm_cfg = {"_target_": "runner.models.timm_model", "name": "vit_base_patch16_224.augreg_in21k", "pretrained": True}
    assert weights_preprocessing(timm_cfg) == {
        "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "input_size": [224, 224], "interpolation": "bicubic",
        "source": "timm pretrained_cfg of vit_base_patch16_224.augreg_in21k"}
    tv = weights_preprocessing({"_target_": "runner.models.torchvision_model", "name": "resnet50",
                                "weights": "IMAGENET1K_V2"})
    assert tv["mean"] == pytest.approx([0.485, 0.456, 0.406]) and tv["input_size"] == [224, 224]
    assert tv["interpolation"] == "bilinear" and tv["source"] == "torchvision ResNet50_Weights.IMAGENET1K_V2"
    assert weights_preprocessing({**timm_cfg, "pretrained": False}) is None
    assert weights_preprocessing(OmegaConf.create({"_target_": "runner.models.convnet"})) is None
    checkpoint = tmp_path / "epoch-0003.pt"
    torch.save({"format_version": 1, "model": {}, "config": {"dataset": {"mean": [0.1], "std": [0.3],
                                                                           "image_size": [11, 13]}}}, checkpoint)
    assert weights_preprocessing({"_target_": "runner.models.convnet", "weights_path": str(checkpoint)}) == {
        "mean": [0.1], "std": [0.3], "input_size": [11, 13], "interpolation": None,
        "source": "the checkpoint's dataset.mean/std"}


def test_the_listing_command_prints_matching_names(capsys):
    assert list_models(["timm", "convnext_t*"]) == 0
    printed = capsys.readouterr().out.split()
    assert "convnext_tiny" in printed and "convnext_tiny.fb_in1k" in printed and "resnet18" not in printed
    assert list_models(["torchvision", "resnet*"]) == 0
    assert "resnet50" in capsys.readouterr().out.split()
    assert list_models(["keras"]) == 2 and "Fix:" in capsys.readouterr().err


def test_the_resnet_presets_are_torchvision_models_and_old_configs_still_build():
    preset = compose_config(["model=resnet18"]).model
    assert preset._target_ == "runner.models.torchvision_model" and preset.name == "resnet18"
    old = {"_target_": "runner.models.resnet", "depth": 18, "num_classes": 7, "in_channels": 3}
    assert models.build(OmegaConf.create(old)).fc.out_features == 7
    assert json.dumps(models.build(OmegaConf.create(old)).pretrained_weights) == "null"


def test_a_builder_refusal_through_build_stays_a_user_error():
    """Hydra's instantiate wraps what the builder raises; the one line must survive it (exit 2, not a traceback)."""
    bad = {"_target_": "runner.models.timm_model", "name": "resnet18", "num_classes": 7, "in_channels": 3,
           "freeze": "head"}
    with pytest.raises(UserError, match=r"^model.freeze='head' is not known"):
        models.build(OmegaConf.create(bad))


def test_the_listing_piped_into_head_ends_quietly():
    import subprocess
    import sys

    listing = subprocess.Popen([sys.executable, "-m", "runner.models", "timm"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    listing.stdout.readline()
    listing.stdout.close()  # what `| head -1` does
    assert listing.wait(timeout=60) == 0 and b"Traceback" not in listing.stderr.read()
