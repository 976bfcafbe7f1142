"""The `Adapter` contract: one pre-trained model as lobell trains, saves and reloads it.

Every modality's adapter (models/text.py, vision.py, audio.py) keeps it, and so does the feature
cache's head-only stand-in (training/feature_cache.py). The shared code (runner, loop, evaluate,
export) reads only these members; anything else an adapter has (a tokenizer, preprocessing, a
sampling rate) is read by its own modality spec (modalities/).

Constructor shape: the modality spec builds adapters as `build_adapter(cfg, problem, labels,
weights)` and loads them as `load_adapter(model_dir)` (tasks.py); the classes' `from_pretrained`
keyword sets stay each their own, because the Python API calls them directly.

A future family whose model computes its own loss (seq2seq, causal/masked LM, detection) keeps the
same contract: `forward` returns the model's outputs; its problem's `loss()` reads the loss from
them instead of comparing logits with targets (see problems/base.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn

    from lobell.strategies.layer_map import LayerMap


@runtime_checkable
class Adapter(Protocol):
    modality: str  # a key of tasks.MODALITIES
    model: nn.Module  # plain transformers / timm / torchvision module: what the run folder saves
    layer_map: LayerMap  # ordered groups, embeddings or stem ... blocks ... head; each parameter once
    name: str  # the model name or path it came from

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The outputs for a collated batch; `model` is passed in because Accelerate wraps it."""

    def save(self, directory: Path, extra: dict | None = None) -> None:
        """A model folder that plain transformers/timm code loads, plus lobell.json (`extra` in it)."""

    @classmethod
    def load(cls, directory: Path) -> Any: ...


@runtime_checkable
class FeatureSplit(Protocol):
    """Optional: the backbone and the head run separately, so head-only stages can train on cached
    backbone features (training/feature_cache.py). `forward_head(forward_features(batch))` must
    equal `forward(batch)`."""

    def forward_features(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor: ...


def has_feature_split(adapter) -> bool:
    return isinstance(adapter, FeatureSplit)


__all__ = ["Adapter", "FeatureSplit", "has_feature_split"]
