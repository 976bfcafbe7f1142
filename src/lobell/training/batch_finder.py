"""`batch_size: auto`: the largest batch that fits memory, the rest made up by gradient accumulation."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from lobell.errors import LobellError
from lobell.training.faults import is_out_of_memory


def find_batch_size(fits: Callable[[int], None], target: int) -> tuple[int, int]:
    """(batch size, gradient-accumulation steps) for an effective batch of `target`.

    `fits(b)` runs one training step and one evaluation step on the worst-case batch of size b
    (longest sequences, largest images) and raises an out-of-memory error when it does not fit.
    Starting at `target`, the size halves until it fits; then it keeps half of the way back up
    as a safety margin against fragmentation and the odd longer batch.
    """
    size = target
    while True:
        try:
            fits(size)
            break
        except Exception as exc:  # noqa: BLE001 - only memory errors are caught; others re-raise
            if not is_out_of_memory(exc):
                raise
            _free()
            if size == 1:
                raise LobellError("a batch of 1 does not fit in memory: use a smaller model, precision=bf16 "
                                  "or a shorter data.max_length / data.image_size") from None
            size //= 2
    if size < target:
        size = max(1, size - size // 4)  # 25% margin below the largest size that fitted
    return size, math.ceil(target / size)


def worst_case_batch(dataset, size: int, collate) -> dict:
    """A batch of the `size` longest examples (text) or the first `size` (fixed-size images)."""
    lengths = dataset.lengths() if hasattr(dataset, "lengths") else [0] * len(dataset)
    order = sorted(range(len(dataset)), key=lambda i: -lengths[i])
    picked = [order[i % len(order)] for i in range(size)]
    return collate([dataset[i] for i in picked])


def _free() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
