"""Runtime faults as user errors: running out of memory names the batch size that failed and what to try."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from lobell.errors import LobellError

# How the allocators word it: CUDA/ROCm and MPS ("out of memory"), the CPU allocator, cuBLAS/cuDNN.
_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory", "alloc_failed",
            "status_not_allocated")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch.OutOfMemoryError and the RuntimeErrors that mean the same (CPU, MPS, cuBLAS)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(marker in str(exc).lower() for marker in _MARKERS)


def out_of_memory_error(setting: str, batch_size: int | str, during: str) -> LobellError:
    """The sentence for an out-of-memory error at `batch_size` (the value of config key `setting`).

    Args:
        setting: the config key whose value failed: `batch_size` (training) or `eval_batch_size`.
        batch_size: the batch size that did not fit.
        during: where it happened, e.g. "training epoch 2" or "evaluation".
    """
    if isinstance(batch_size, int) and batch_size > 1:
        smaller = f"set {setting}={batch_size // 2}"
        if setting == "batch_size":
            smaller = (f"set batch_size: auto (the largest batch that fits; grad_accum keeps the effective batch) "
                       f"or a smaller one, e.g. batch_size={batch_size // 2} grad_accum=2")
        fix = smaller
    else:
        fix = "use a smaller model, precision=bf16, or a shorter data.max_length / smaller data.image_size"
    return LobellError(f"out of memory during {during} with {setting}={batch_size}; {fix}")


@contextmanager
def out_of_memory_as_user_error(setting: str, batch_size: int | str, during: str) -> Iterator[None]:
    """Run the block; an out-of-memory error in it becomes `out_of_memory_error` (others pass through)."""
    try:
        yield
    except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        if not is_out_of_memory(exc):
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise out_of_memory_error(setting, batch_size, during) from exc
