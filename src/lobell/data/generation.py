"""Text generation data: source/target pairs (seq2seq) and plain text, prompt/completion pairs or chat
`messages` (causal LM), tokenised with labels (-100 where no loss falls), padded or packed per batch.

Labels follow one rule for both model kinds: position t of `labels` is what the model should emit
at t (seq2seq: the decoder's step t; causal: the token at t, predicted from the tokens before it),
and -100 marks a position that adds nothing to the loss (padding, prompts, user turns, and the
first token of every causal example, which nothing before it predicts; so packed examples never
learn across their boundary either).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from lobell.data.tables import read_table, require_columns, row_name, text_column
from lobell.errors import LobellError

IGNORE = -100  # transformers' and torch's ignore_index


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    prompt_ids: list[int]  # what generation starts from (seq2seq: the source; causal: the prompt)


def read_generation(path, data, problem: str, with_targets: bool = True):
    """(inputs, references, frame) of a data file: seq2seq sources and targets; causal-LM texts, prompts
    with completions, or chat conversations (each a list of {role, content}) with their last reply."""
    frame = read_table(path)
    if problem == "seq2seq":
        columns = {"data.source_column": data.source_column}
        if with_targets:
            columns["data.target_column"] = data.target_column
        require_columns(frame, columns, path)
        sources = text_column(frame, data.source_column, path)
        targets = text_column(frame, data.target_column, path) if with_targets else [""] * len(sources)
        return sources, targets, frame
    if data.messages_column in frame.columns:
        conversations = [_messages(value, path, row_name(path, i, frame), data.messages_column)
                         for i, value in enumerate(frame[data.messages_column].tolist())]
        replies = [c[-1]["content"] if c[-1]["role"] == "assistant" else "" for c in conversations]
        return conversations, replies, frame
    if data.prompt_column in frame.columns:
        prompts = text_column(frame, data.prompt_column, path)
        if not with_targets:
            return prompts, [""] * len(prompts), frame
        require_columns(frame, {"data.completion_column": data.completion_column}, path)
        return prompts, text_column(frame, data.completion_column, path), frame
    require_columns(frame, {"data.text_column": data.text_column}, path)
    texts = text_column(frame, data.text_column, path)
    return texts, [""] * len(texts), frame


def _messages(value, path, where: str, column: str) -> list[dict]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise LobellError(f"data file '{path}' column '{column}' at {where} is not a JSON list of messages") from None
    value = list(value) if isinstance(value, (list, tuple, np.ndarray)) else value
    if not value or not isinstance(value, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value):
        raise LobellError(f"data file '{path}' column '{column}' at {where} must be a non-empty list of "
                          f'{{"role": ..., "content": ...}} messages')
    return [{"role": m["role"], "content": m["content"]} for m in value]


def with_eos(ids: list[int], eos: int | None) -> list[int]:
    return ids + [eos] if eos is not None and (not ids or ids[-1] != eos) else ids


def encode_seq2seq(tokenizer, sources: list[str], targets: list[str], prefix: str, max_length: int) -> list[Example]:
    """Source ids (after `data.source_prefix`, T5's `translate English to German: `) and target ids ending in EOS."""
    source_ids = tokenizer([prefix + s for s in sources], truncation=True, max_length=max_length)["input_ids"]
    target_ids = tokenizer(text_target=list(targets), add_special_tokens=True, truncation=True,
                           max_length=max_length)["input_ids"]
    eos = tokenizer.eos_token_id
    return [Example(s, with_eos(t, eos)[:max_length] if t or tgt else [], s) for s, t, tgt in
            zip(source_ids, target_ids, targets)]


def encode_causal(tokenizer, inputs: list, references: list[str], completion_only: bool, max_length: int,
                  for_generation: bool = False) -> list[Example]:
    """Token ids and labels for each text, prompt/completion pair or conversation (truncated at `max_length`).

    `completion_only`: the loss falls on completions and assistant turns only; plain text learns every token.
    `for_generation`: the inputs are prompts alone (lobell predict); labels stay empty.
    """
    eos = tokenizer.eos_token_id
    examples = []
    for item, reference in zip(inputs, references):
        if isinstance(item, list):
            pieces = chat_pieces(tokenizer, item, for_generation)
        elif reference or for_generation:  # a prompt and its completion
            prompt = tokenizer(item)["input_ids"]
            completion = with_eos(tokenizer(reference, add_special_tokens=False)["input_ids"], eos) if reference else []
            pieces = [(prompt, False), (completion, True)]
        else:  # plain text: every token is learnt
            pieces = [(with_eos(tokenizer(item)["input_ids"], eos), True)]
        examples.append(_join(pieces, completion_only, max_length))
    return examples


def _join(pieces: list[tuple[list[int], bool]], completion_only: bool, max_length: int) -> Example:
    ids, labels, prompt = [], [], None
    for piece, learnt in pieces:
        if learnt and prompt is None:
            prompt = list(ids)  # generation starts where the first learnt piece would
        ids += piece
        labels += piece if (learnt or not completion_only) else [IGNORE] * len(piece)
    ids, labels = ids[:max_length], labels[:max_length]
    if labels:
        labels[0] = IGNORE  # nothing before it predicts the first token
    return Example(ids, labels, prompt if prompt is not None else list(ids))


def chat_pieces(tokenizer, messages: list[dict], for_generation: bool = False) -> list[tuple[list[int], bool]]:
    """A conversation as (token ids, learnt) pieces through the tokenizer's chat template: each assistant
    reply is learnt, everything else (system and user turns, the template's assistant header) is not.

    Each turn is the template's text of the conversation through it minus the text before it, so the
    pieces concatenate to exactly the rendered conversation.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise LobellError("the data holds chat messages but the model's tokenizer has no chat template; give "
                          "prompt/completion columns instead, or a model whose tokenizer_config.json has one")
    if for_generation and messages[-1]["role"] == "assistant":
        messages = messages[:-1]

    def render(upto: int, prompt: bool = False) -> str:
        if upto == 0:
            return ""
        return tokenizer.apply_chat_template(messages[:upto], tokenize=False, add_generation_prompt=prompt)

    pieces, done = [], ""
    for turn, message in enumerate(messages):
        if message["role"] == "assistant":
            header = render(turn, prompt=True)
            pieces.append((_ids(tokenizer, header[len(done):]), False))
            done = header
        text = render(turn + 1)
        if not text.startswith(done):
            raise LobellError("the tokenizer's chat template renders a conversation differently from its beginning, "
                              "so assistant turns cannot be told apart; give prompt/completion columns instead")
        pieces.append((_ids(tokenizer, text[len(done):]), message["role"] == "assistant"))
        done = text
    if for_generation:
        pieces.append((_ids(tokenizer, render(len(messages), prompt=True)[len(done):]), False))
        pieces.append(([], True))
    return pieces


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


class GenerationDataset(Dataset):
    """Tokenised examples and their reference texts (what generation is scored against)."""

    def __init__(self, examples: list[Example], references: list[str], max_length: int, truncated: int = 0):
        self.examples = examples
        self.targets = np.asarray(references, dtype=object)  # the references: Split.targets' role
        self.max_length = max_length
        self.truncated = truncated

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        example = self.examples[index]
        return {"input_ids": example.input_ids, "labels": example.labels, "prompt_ids": example.prompt_ids,
                "index": index}

    def lengths(self) -> list[int]:
        return [len(e.input_ids) for e in self.examples]


def _pad(rows: list[list[int]], value: int, left: bool = False) -> torch.Tensor:
    longest = max((len(r) for r in rows), default=0) or 1
    out = torch.full((len(rows), longest), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            values = torch.tensor(row, dtype=torch.long)
            if left:
                out[i, longest - len(row):] = values
            else:
                out[i, : len(row)] = values
    return out


class GenerationCollator:
    """Right-padded inputs with their labels (`targets`); the prompts left-padded for batched generation.

    seq2seq: `targets` are the decoder's labels, padded with -100. causal: `targets` line up with `input_ids`.
    `pack_length` (causal LM, training): the batch's examples packed into rows of at most that many tokens,
    with position ids restarting at 0 for each example and no attention mask, from which transformers builds
    a block-diagonal causal mask (no example attends to another; masking_utils.find_packed_sequence_indices).
    """

    def __init__(self, pad_token_id: int, causal: bool, pack_length: int | None = None):
        self.pad, self.causal, self.pack_length = pad_token_id, causal, pack_length

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        index = torch.tensor([item["index"] for item in items], dtype=torch.long)
        if self.pack_length:
            return {**pack(items, self.pack_length, self.pad), "index": index}
        inputs = [item["input_ids"] for item in items]
        batch = {"input_ids": _pad(inputs, self.pad), "attention_mask": _pad([[1] * len(r) for r in inputs], 0),
                 "targets": _pad([item["labels"] for item in items], IGNORE), "index": index}
        prompts = [item["prompt_ids"] for item in items]
        if self.causal:
            batch["prompt_ids"] = _pad(prompts, self.pad, left=True)
            batch["prompt_mask"] = _pad([[1] * len(r) for r in prompts], 0, left=True)
        return batch


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: example indices per row, each row holding at most `capacity` tokens."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: -lengths[k]):
        slot = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if slot is None:
            rows.append([i])
            room.append(capacity - lengths[i])
        else:
            rows[slot].append(i)
            room[slot] -= lengths[i]
    return rows


def pack(items: list[dict], capacity: int, pad: int) -> dict[str, torch.Tensor]:
    """Rows of whole examples back to back; `position_ids` restart at 0 for each (padding too)."""
    rows = pack_rows([len(item["input_ids"]) for item in items], capacity)
    ids, labels, positions = [], [], []
    for row in rows:
        ids.append([t for i in row for t in items[i]["input_ids"]])
        labels.append([t for i in row for t in items[i]["labels"]])
        positions.append([p for i in row for p in range(len(items[i]["input_ids"]))])
    longest = max(len(r) for r in ids)
    # Padding at a row's end is a sequence of its own (positions from 0) that nothing learns from.
    positions = [p + list(range(longest - len(p))) for p in positions]
    return {"input_ids": _pad(ids, pad), "targets": _pad(labels, IGNORE), "position_ids": torch.tensor(positions)}
