"""Unlabeled text for masked-LM training: read (a table's text column or a .txt file, one text per
line), tokenised once, masked afresh for every training batch (dynamic masking, RoBERTa-style) and
with a fixed seed per batch for evaluation (the same masks every epoch, so perplexities compare)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lobell.errors import LobellError

EVAL_MASK_SEED = 1234  # validation/test masks: seed + the batch's first example index


def read_texts(path: Path, column: str) -> list[str]:
    """The non-empty texts of a .txt file (one per line) or of `column` of a csv/jsonl/parquet table."""
    path = Path(path)
    if not path.is_file():
        raise LobellError(f"text file '{path}' does not exist")
    if path.suffix.lower() == ".txt":
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    else:
        from lobell.data.tables import read_table

        frame = read_table(path)
        if column not in frame.columns:
            raise LobellError(f"data file '{path}' has no column '{column}' (it has {', '.join(map(str, frame.columns))}); "
                              f"set data.text_column, or give a .txt file with one text per line")
        texts = [str(value).strip() for value in frame[column].tolist() if value is not None and value == value]
    texts = [text for text in texts if text]
    if not texts:
        raise LobellError(f"text file '{path}' holds no text")
    return texts


class MaskableText(Dataset):
    """Token ids (with special-token marks, and character offsets for whole-word masking) per text."""

    def __init__(self, tokenizer, texts: list[str], max_length: int, offsets: bool):
        encoded = tokenizer(texts, truncation=True, max_length=max_length, return_special_tokens_mask=True,
                            return_attention_mask=False, return_token_type_ids=False,
                            return_offsets_mapping=offsets)
        keys = ["input_ids", "special_tokens_mask"] + (["offset_mapping"] if offsets else [])
        self.items = [{key: encoded[key][i] for key in keys} for i in range(len(texts))]
        self.targets = np.zeros(len(texts), dtype=np.int64)  # the labels are made per batch by masking
        self.max_length = max_length
        self.truncated = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return {**self.items[index], "index": index}

    def lengths(self) -> list[int]:
        return [len(item["input_ids"]) for item in self.items]


class MaskingCollator:
    """Pad, then mask with transformers' DataCollatorForLanguageModeling (15%: 80% [MASK], 10% random,
    10% kept; `whole_word_mask`: every piece of a chosen word). Training draws from the global RNG,
    which the run seeds and checkpoints; evaluation seeds each batch from its first example."""

    def __init__(self, tokenizer, mlm_probability: float, whole_word_mask: bool, train: bool):
        self.tokenizer, self.train = tokenizer, train
        self.options = {"mlm_probability": mlm_probability, "whole_word_mask": whole_word_mask}
        if whole_word_mask:  # transformers keeps no random replacement for whole words (it would warn and do this)
            self.options.update(mask_replace_prob=1.0, random_replace_prob=0.0)
        self.masker = self._masker(None)

    def _masker(self, seed: int | None):
        from transformers import DataCollatorForLanguageModeling

        return DataCollatorForLanguageModeling(self.tokenizer, seed=seed, **self.options)

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        masker = self.masker if self.train else self._masker(EVAL_MASK_SEED + int(items[0]["index"]))
        longest = max(len(item["input_ids"]) for item in items)
        examples = [{k: v for k, v in item.items() if k != "index"} for item in items]
        for example in examples:  # tokenizer.pad pads ids and masks, not character offsets
            if "offset_mapping" in example:
                example["offset_mapping"] = list(example["offset_mapping"]) + [(0, 0)] * (longest - len(example["input_ids"]))
        batch = masker(examples)
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                "targets": batch["labels"], "index": torch.tensor([item["index"] for item in items])}
