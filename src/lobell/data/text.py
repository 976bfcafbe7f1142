"""Text data: tokenised once, padded per batch, batched by similar length."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from lobell.errors import LobellError

# The most tokens any encoder's position table is assumed to hold when the tokenizer says nothing
# sensible (HF tokenizers report a huge sentinel when unknown).
_MAX_POSITIONS_FALLBACK = 512
# Group-by-length sorts within buckets of this many batches: enough to cut padding, still random.
_BUCKET_BATCHES = 50


def max_length_for(tokenizer, model_config, requested: int | None) -> int:
    """The truncation length: the user's, else the smaller of tokenizer and position-table limits.

    Raises:
        LobellError: `requested` is longer than the model's position table (it would index past it).
    """
    positions = getattr(model_config, "max_position_embeddings", None)
    if requested is not None:
        if positions and requested > positions:
            name = getattr(model_config, "_name_or_path", "") or "the model"
            raise LobellError(f"data.max_length={requested} is longer than {name!s}'s {positions} positions; set "
                              f"data.max_length to {positions} or less, or leave it unset to use the model's limit")
        return requested
    limits = [_MAX_POSITIONS_FALLBACK]
    if 0 < getattr(tokenizer, "model_max_length", 0) < 100_000:
        limits.append(tokenizer.model_max_length)
    if positions:
        limits.append(positions)
    return min(limits)


TOKENIZE_CHUNK = 2048  # texts per tokenizer call: a bar that moves, no measurable cost


class TokenizedText(Dataset):
    """Token ids for each text (no padding) and their targets; `truncated` counts the texts cut short."""

    def __init__(self, tokenizer, texts: list[str], targets: np.ndarray, max_length: int, track=None):
        # One token over the limit tells a text that was cut from one that fits exactly; only the
        # (few) texts over the limit are tokenised a second time, at the limit. `track` (a
        # Reporter's) shows a bar over chunks of texts.
        chunks = range(0, len(texts), TOKENIZE_CHUNK)
        encoded = []
        for start in (track(chunks, "tokenising") if track else chunks):
            encoded += tokenizer(texts[start:start + TOKENIZE_CHUNK], truncation=True, max_length=max_length + 1,
                                 return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        long = [i for i, ids in enumerate(encoded) if len(ids) > max_length]
        if long:
            again = tokenizer([texts[i] for i in long], truncation=True, max_length=max_length,
                              return_attention_mask=False, return_token_type_ids=False)["input_ids"]
            for i, ids in zip(long, again):
                encoded[i] = ids
        self.input_ids: list[list[int]] = encoded
        self.targets = targets
        self.max_length = max_length
        self.truncated = len(long)

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict:
        return {"input_ids": self.input_ids[index], "target": self.targets[index], "index": index}

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


def truncation_notes(datasets: dict) -> list[str]:
    """One line per split whose texts were cut at max_length (for the run log)."""
    notes = []
    for name, dataset in datasets.items():
        if getattr(dataset, "truncated", 0):
            notes.append(f"{name}: {dataset.truncated} of {len(dataset)} texts are longer than {dataset.max_length} "
                         f"tokens and were truncated (the model reads only their start; data.max_length)")
    return notes


class PadCollator:
    """Pad a batch to its own longest sequence (dynamic padding), build the attention mask."""

    def __init__(self, pad_token_id: int, target_dtype: torch.dtype = torch.long):
        self.pad_token_id = pad_token_id
        self.target_dtype = target_dtype

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(item["input_ids"]) for item in items)
        input_ids = torch.full((len(items), longest), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), longest), dtype=torch.long)
        for row, item in enumerate(items):
            ids = item["input_ids"]
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        targets = torch.as_tensor(np.stack([np.asarray(item["target"]) for item in items]), dtype=self.target_dtype)
        index = torch.tensor([item["index"] for item in items], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "targets": targets, "index": index}


class LengthGroupedBatches(Sampler[list[int]]):
    """Random batches of similar-length examples: shuffle, sort within buckets, shuffle batches.

    Each pass draws a fresh order from (seed, epoch); `set_epoch` pins the epoch, so a resumed run
    sees the same order. With `shuffle=False` batches are sorted by length (evaluation).
    `drop_single`: leave out a last batch of one example (batch norm in a head cannot train on one).
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0, shuffle: bool = True,
                 drop_single: bool = False):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.drop_single = drop_single and len(self.lengths) % batch_size == 1 and len(self.lengths) > 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size) - self.drop_single

    def __iter__(self):
        if not self.shuffle:
            order = np.argsort(-self.lengths, kind="stable")
            yield from (order[i : i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size))
            return
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        bucket = self.batch_size * _BUCKET_BATCHES
        batches = []
        for start in range(0, len(order), bucket):
            chunk = order[start : start + bucket]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches.extend(chunk[i : i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size))
        if self.drop_single:
            batches = [batch for batch in batches if len(batch) > 1]
        for index in rng.permutation(len(batches)):
            yield batches[index]
        self.epoch += 1
