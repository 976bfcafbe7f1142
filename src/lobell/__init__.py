"""lobell: fine-tune pre-trained models the right way (Layers, Optimizer, Batch size, Epochs, Loss, LR).

The names below load on first use (PEP 562), so `lobell --help` and config checks answer at once
instead of importing torch and transformers first.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

_EXPORTS = {
    "BERTFineTuner": "lobell.api", "Config": "lobell.config", "FineTuner": "lobell.api",
    "LobellError": "lobell.errors", "RunResult": "lobell.training.runner", "TextClassifier": "lobell.api",
    "TransferLearningModel": "lobell.vision_api", "load": "lobell.api", "load_config": "lobell.config",
    "train": "lobell.training.runner",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"

if TYPE_CHECKING:
    from lobell.api import BERTFineTuner, FineTuner, TextClassifier, load
    from lobell.config import Config, load_config
    from lobell.errors import LobellError
    from lobell.training.runner import RunResult, train
    from lobell.vision_api import TransferLearningModel


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lobell' has no attribute '{name}'")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
