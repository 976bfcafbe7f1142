"""A transformers encoder with its masked-LM head (AutoModelForMaskedLM), for continued pre-training.

The saved model/ folder is a plain masked-LM checkpoint: `AutoModelForMaskedLM.from_pretrained`
reads it whole, and `AutoModelForSequenceClassification.from_pretrained` reads its encoder and adds
a new classifier (what `pretrain:` does next). A checkpoint without MLM head weights (a
sentence-transformers encoder such as all-MiniLM-L6-v2) gets a fresh head whose output layer is
tied to the word embeddings, so only the small transform and the output bias start untrained.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from lobell.errors import LobellError
from lobell.models.hub import resolve_pretrained
from lobell.models.text import _quiet_transformers, head_prefixes
from lobell.strategies.layer_map import LayerMap, build_layer_map


class MaskedLMAdapter:
    """`AutoModelForMaskedLM`, its tokenizer and its layer map (embeddings, blocks, the MLM head)."""

    modality = "masked-text"

    def __init__(self, model: nn.Module, tokenizer, name: str, new_params: set[str] = frozenset()):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.new_params = sorted(new_params)  # what the checkpoint lacked (the log says so)
        self.layer_map: LayerMap = build_layer_map(
            model, head_prefixes(model, set(new_params) - _tied(model)),
            source=f"transformers {type(model).__name__}: embeddings, each block, the masked-LM head")

    @classmethod
    def from_pretrained(cls, name: str, weights: bool = True) -> MaskedLMAdapter:
        from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

        path = resolve_pretrained(name)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            with _quiet_transformers():
                new_params: set[str] = set()
                if weights:
                    model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
                    new_params = set(info["missing_keys"])
                else:
                    model = AutoModelForMaskedLM.from_config(AutoConfig.from_pretrained(path))
        except (OSError, ValueError, KeyError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LobellError(f"model '{name}' could not be loaded as a masked language model: {reason}") from None
        if tokenizer.mask_token is None:
            raise LobellError(f"model '{name}' has no mask token in its tokenizer: masked-LM training needs one")
        return cls(model, tokenizer, name, new_params)

    @classmethod
    def load(cls, directory: Path) -> MaskedLMAdapter:
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        with _quiet_transformers():
            model = AutoModelForMaskedLM.from_pretrained(directory)
        return cls(model.eval(), AutoTokenizer.from_pretrained(directory), str(directory))

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def save(self, directory: Path, extra: dict | None = None) -> None:
        with _quiet_transformers():
            self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        (directory / "lobell.json").write_text(json.dumps({"modality": self.modality, "base_model": self.name,
                                                           **(extra or {})}, indent=2))


def _tied(model: nn.Module) -> set[str]:
    """Missing keys that are tied to a loaded weight (the MLM decoder shares the word embeddings)."""
    present = {name for name, _ in model.named_parameters()}
    return {name for name, _ in model.named_parameters(remove_duplicate=False)} - present
