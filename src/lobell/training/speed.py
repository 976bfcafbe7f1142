"""Speed levers that change how tensors are laid out, not what is computed: channels-last for CNNs."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

# A backbone with at least this many 2-d convolutions is a CNN (a ViT has one: its patch embedding).
_CNN_CONVOLUTIONS = 3
_AUTO_DEVICES = ("cuda", "cpu")


def use_channels_last(model: nn.Module, setting: str, device: torch.device, log: Callable[[str], None]) -> bool:
    """Put a CNN's weights in channels-last order where `setting` asks (and `log` says so); True if it did.

    `auto` means on CUDA (cuDNN's NHWC kernels) and on CPUs (oneDNN's): bench/channels_last.py
    measured 1.2-1.4x images/s for MobileNetV2 training and 1.3-1.4x for MobileNetV2 and
    ResNet-18 inference on 2 CPU cores (ResNet-18 training at 64 px was even). Other devices keep
    the default layout. Convolutions take the weights' layout for their outputs, so inputs need no
    conversion.
    """
    convolutions = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    if setting == "off" or convolutions < _CNN_CONVOLUTIONS or (setting == "auto" and device.type not in _AUTO_DEVICES):
        return False
    model.to(memory_format=torch.channels_last)
    log(f"channels-last memory order for {convolutions} convolutions (speed.channels_last={setting})")
    return True
