"""Transformers text encoders (BERT family) with a new sequence-classification head."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from lobell.errors import LobellError
from lobell.models.hub import resolve_pretrained
from lobell.strategies.layer_map import LayerMap, build_layer_map

_PROBLEM_TYPES = {"classification": "single_label_classification",
                  "multi-label": "multi_label_classification", "regression": "regression"}


def head_prefixes(model: nn.Module, new_params: set[str] = frozenset()) -> list[str]:
    """A transformers task model's new layers: every top-level child outside its base model, plus
    any parameter the checkpoint did not hold (e.g. a pooler a sentence encoder never trained)."""
    base = getattr(model, "base_model_prefix", "")
    outside = [name for name, child in model.named_children()
               if name != base and any(True for _ in child.parameters())]
    return outside + sorted(new_params)


class TextAdapter:
    """A transformers `AutoModelForSequenceClassification`, its tokenizer and its layer map."""

    modality = "text"

    def __init__(self, model: nn.Module, tokenizer, name: str, new_params: set[str] = frozenset()):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.layer_map: LayerMap = build_layer_map(
            model, head_prefixes(model, new_params),
            source=f"transformers {type(model).__name__}: embeddings, each block of the repeated block list, new head")

    @classmethod
    def from_pretrained(cls, name: str, num_outputs: int, problem: str,
                        labels: list[str] | None = None, weights: bool = True) -> TextAdapter:
        """Load the encoder and add a new head; `weights=False` builds the structure only."""
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        path = resolve_pretrained(name)
        kwargs = {"num_labels": num_outputs, "problem_type": _PROBLEM_TYPES[problem]}
        if labels:
            kwargs["id2label"] = dict(enumerate(labels))
            kwargs["label2id"] = {label: i for i, label in enumerate(labels)}
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            with _quiet_transformers():
                new_params: set[str] = set()
                if weights:
                    model, info = AutoModelForSequenceClassification.from_pretrained(
                        path, ignore_mismatched_sizes=True, output_loading_info=True, **kwargs)
                    new_params = set(info["missing_keys"]) | {k if isinstance(k, str) else k[0] for k in info["mismatched_keys"]}
                else:
                    model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(path, **kwargs))
        except (OSError, ValueError, KeyError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LobellError(f"model '{name}' could not be loaded as a text classifier: {reason}") from None
        return cls(model, tokenizer, name, new_params)

    @classmethod
    def load(cls, directory: Path) -> TextAdapter:
        """Reload a saved `model/` folder (the same way plain transformers would)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(directory)
        with _quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(directory)
        return cls(model, tokenizer, str(directory))

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def save(self, directory: Path, extra: dict | None = None) -> None:
        with _quiet_transformers():
            self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        (directory / "lobell.json").write_text(json.dumps({"modality": "text", "base_model": self.name, **(extra or {})},
                                                          indent=2))


class _quiet_transformers:
    """Silence the 'newly initialized weights' warning: lobell reports the new head itself."""

    def __enter__(self):
        self.logger = logging.getLogger("transformers")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)
        from transformers.utils import logging as hf_logging

        self.hf_level = hf_logging.get_verbosity()
        self.bars = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        self.logger.setLevel(self.level)
        hf_logging.set_verbosity(self.hf_level)
        if self.bars:
            hf_logging.enable_progress_bar()
