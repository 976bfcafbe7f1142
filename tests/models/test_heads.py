"""New heads: their layer structure, and a custom head inside a vision adapter (shape, layer map, save/reload)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from vision_fixtures import tiny_vit_weights  # noqa: F401

from lobell.errors import LobellError
from lobell.models.heads import build_head, head_from_spec, head_spec, last_linear, set_submodule
from lobell.models.vision import VisionAdapter


def test_head_layers_follow_the_spec():
    head = build_head(64, 5, hidden=[32, 16], dropout=0.3, batch_norm=True, activation="gelu")
    kinds = [type(layer).__name__ for layer in head]
    assert kinds == ["Linear", "BatchNorm1d", "GELU", "Dropout", "Linear", "BatchNorm1d", "GELU", "Dropout", "Linear"]
    assert [layer.out_features for layer in head if isinstance(layer, nn.Linear)] == [32, 16, 5]
    assert head[0].bias is None  # batch norm's shift replaces the bias
    assert head[3].p == 0.3
    assert head.eval()(torch.randn(4, 64)).shape == (4, 5)


def test_head_without_hidden_layers_is_dropout_then_linear():
    head = build_head(64, 3, hidden=[], dropout=0.2)
    assert [type(layer).__name__ for layer in head] == ["Dropout", "Linear"]
    assert [type(layer).__name__ for layer in build_head(64, 3, hidden=[], dropout=0.0)] == ["Linear"]


def test_head_without_batch_norm_keeps_biases():
    head = build_head(8, 2, hidden=[4], dropout=0.0, batch_norm=False, activation="tanh")
    assert [type(layer).__name__ for layer in head] == ["Linear", "Tanh", "Linear"]
    assert head[0].bias is not None


def test_unknown_activation_is_a_clear_error():
    with pytest.raises(LobellError, match="head.activation='swish'"):
        build_head(8, 2, hidden=[4], activation="swish")


def test_head_rebuilt_from_its_spec_loads_the_same_weights():
    head = build_head(16, 3, hidden=[8], dropout=0.1, batch_norm=True, activation="silu")
    twin = head_from_spec(head_spec(16, [8], 0.1, True, "silu"), 3)
    twin.load_state_dict(head.state_dict())  # strict: same names and shapes
    x = torch.randn(5, 16)
    assert torch.equal(head.eval()(x), twin.eval()(x))


def test_set_submodule_and_last_linear():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Dropout(), nn.Linear(4, 2)))
    assert last_linear(model, ("1",)) == "1.1"
    set_submodule(model, "1.1", nn.Linear(4, 7))
    assert model(torch.randn(2, 4)).shape == (2, 7)


@pytest.mark.parametrize("name", ["timm/test_vit", "torchvision/resnet18", "torchvision/mobilenet_v2"])
def test_custom_head_in_a_vision_adapter(name):
    head = {"hidden": [24], "dropout": 0.2, "batch_norm": True, "activation": "relu"}
    adapter = VisionAdapter.from_pretrained(name, 3, weights="random", head=head, image_size=32)
    new = adapter.model.get_submodule(adapter.classifier)
    assert [type(layer).__name__ for layer in new] == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]
    assert new[0].out_features == 24 and new[-1].out_features == 3
    head_group = adapter.layer_map.groups[-1]
    assert head_group.is_head
    assert set(head_group.param_names) == {f"{adapter.classifier}.{n}" for n, _ in new.named_parameters()}
    adapter.model.eval()
    assert adapter.forward(adapter.model, {"pixel_values": torch.randn(2, 3, 32, 32)}).shape == (2, 3)


def test_custom_head_survives_save_and_load(tmp_path, tiny_vit_weights):  # noqa: F811
    head = {"hidden": [16], "dropout": 0.0, "batch_norm": True, "activation": "gelu"}
    adapter = VisionAdapter.from_pretrained("timm/test_vit", 2, weights=str(tiny_vit_weights), head=head, image_size=32)
    adapter.model.eval()
    adapter.save(tmp_path, {"labels": ["a", "b"]})
    again = VisionAdapter.load(tmp_path).model.eval()
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(adapter.model(x), again(x), atol=1e-6)
