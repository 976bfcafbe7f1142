"""The `Modality` contract: the data side of a task, bundled.

A spec says where the input column is, how files are read into inputs and raw targets, how a split
becomes a dataset the model reads and a loader that batches it, and which adapter class builds and
loads the model. The task registry (tasks.py) maps each task name to a spec and a problem.
"""

from __future__ import annotations

from typing import Any, Protocol


def own_generator():
    """A loader's own generator: starting an epoch then draws nothing from the global RNG, so a
    resumed run's RNG (restored from the checkpoint) matches the uninterrupted run's exactly."""
    import torch

    return torch.Generator().manual_seed(0)


def target_dtype(targets):
    """The tensor dtype of a split's targets: class ids train as long, multi-hot rows and values as float."""
    import torch

    return torch.long if targets.dtype.kind == "i" else torch.float32


class Modality(Protocol):
    name: str
    find_unused_parameters: bool  # DDP must look for parameters a step skipped (audio's layerdrop)

    def input_column(self, data) -> str: ...

    def reader(self, data) -> Any:
        """`read(path, input_column, label_column, problem) -> (inputs, raw targets, frame)`."""

    def build_adapter(self, cfg, problem: str, labels, weights: bool) -> Any: ...

    def load_adapter(self, model_dir) -> Any: ...

    def dataset(self, data, adapter, split, max_length: int | None, reporter) -> Any: ...

    def loader(self, cfg, adapter, dataset, train: bool, batch_size: int) -> Any: ...
