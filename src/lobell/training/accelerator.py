"""One Accelerator per run, and which precision `auto` means on this hardware."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState


def make_accelerator(precision: str, **kwargs) -> Accelerator:
    """An Accelerator for this process; `auto` precision is bf16 only where the hardware runs it fast.
    `kwargs` go to Accelerator (the trackers' `log_with` and `project_dir`)."""
    AcceleratorState._reset_state()  # a fresh state per run, so several runs can share one process
    return Accelerator(mixed_precision=resolve_precision(precision), cpu=not torch.cuda.is_available(), **kwargs)


def resolve_precision(precision: str) -> str:
    if precision == "fp32":
        return "no"
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    # CPUs without AVX-512 BF16/AMX emulate bf16 matmuls slower than fp32: stay in fp32 there.
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "no"


def set_precision(accelerator: Accelerator, mixed_precision: str) -> None:
    """Switch a fresh Accelerator between fp32 ("no") and bf16 before any model is prepared.

    Accelerate fixes the precision when it is built, but `precision: auto` is measured on the model
    (training/precision_probe.py), which exists only later; between these two no other attribute
    differs (tests/training/test_precision_probe.py compares with a freshly built Accelerator)."""
    if mixed_precision not in ("no", "bf16") or accelerator.mixed_precision not in ("no", "bf16"):
        raise ValueError(f"set_precision switches between fp32 and bf16, not {accelerator.mixed_precision!r} -> "
                         f"{mixed_precision!r}")
    accelerator.state._mixed_precision = mixed_precision
    accelerator.native_amp = mixed_precision == "bf16"
