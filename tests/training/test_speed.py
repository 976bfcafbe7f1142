"""Speed levers that must not change results: channels-last CNN weights."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from lobell.training.speed import use_channels_last


def _layout(model: nn.Module) -> bool:
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    return conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()


@pytest.mark.parametrize("setting, device, expected", [("auto", "cpu", True), ("auto", "cuda", True),
                                                       ("auto", "mps", False), ("on", "mps", True),
                                                       ("off", "cpu", False)])
def test_channels_last_follows_the_setting_and_device(setting, device, expected):
    model, said = torchvision.models.resnet18(num_classes=3), []
    assert use_channels_last(model, setting, torch.device(device), said.append) is expected
    assert _layout(model) is expected and bool(said) is expected


def test_a_model_with_one_convolution_is_not_a_cnn():
    vit_like = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.Flatten(), nn.Linear(8 * 4 * 4, 2))
    assert not use_channels_last(vit_like, "on", torch.device("cpu"), print)
    assert vit_like[0].weight.is_contiguous()


def test_channels_last_gives_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    default = torchvision.models.mobilenet_v2(num_classes=4).eval()
    fast = torchvision.models.mobilenet_v2(num_classes=4).eval()
    fast.load_state_dict(default.state_dict())
    assert use_channels_last(fast, "auto", torch.device("cpu"), lambda _: None)
    images = torch.randn(2, 3, 64, 64)
    outputs = default(images), fast(images)
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-5)
    outputs[0].sum().backward()
    outputs[1].sum().backward()
    torch.testing.assert_close(fast.features[0][0].weight.grad.contiguous(), default.features[0][0].weight.grad,
                               rtol=1e-4, atol=1e-5)
