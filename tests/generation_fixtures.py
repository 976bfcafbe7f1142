"""Generation fixtures: tiny random T5, GPT-2 and Llama generators over a character tokenizer, and date-format data."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest

SPECIAL = ["<pad>", "</s>", "<unk>"]
CHARACTERS = list("abcdefghijklmnopqrstuvwxyz0123456789 -/:.,?>\n")
ROLES = ["<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% if m['role'] == 'assistant' %}</s>"
                 "{% endif %}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")


def char_tokenizer(eos_after: bool):
    """One token per character; `eos_after` appends </s> to every encoded text (T5's habit)."""
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL + CHARACTERS + ROLES)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.decoder = decoders.Fuse()
    if eos_after:
        core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                        model_max_length=64)
    tokenizer.add_special_tokens({"additional_special_tokens": ROLES})
    return tokenizer


def vocab_size() -> int:
    return len(SPECIAL) + len(CHARACTERS) + len(ROLES)


def make_tiny_t5(directory: Path, seed: int = 0) -> Path:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    config = T5Config(vocab_size=vocab_size(), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                      num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, dropout_rate=0.0)
    T5ForConditionalGeneration(config).save_pretrained(directory)
    char_tokenizer(eos_after=True).save_pretrained(directory)
    return directory


def make_tiny_causal(directory: Path, family: str = "gpt2", seed: int = 0) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if family == "gpt2":
        config = GPT2Config(vocab_size=vocab_size(), n_positions=128, n_embd=32, n_layer=2, n_head=2, bos_token_id=1,
                            eos_token_id=1, pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        model = GPT2LMHeadModel(config)
    else:
        config = LlamaConfig(vocab_size=vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                             bos_token_id=1, eos_token_id=1, pad_token_id=0, tie_word_embeddings=False)
        model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    tokenizer = char_tokenizer(eos_after=False)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)
    return directory


def date_rows(n: int, seed: int) -> pd.DataFrame:
    """ISO dates and the same dates day/month/year: a reordering of characters a tiny model can learn."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        year, month, day = rng.randint(1990, 2029), rng.randint(1, 12), rng.randint(1, 28)
        rows.append({"source": f"{year}-{month:02d}-{day:02d}", "target": f"{day:02d}/{month:02d}/{year}"})
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory) -> Path:
    return make_tiny_t5(tmp_path_factory.mktemp("tiny_t5"))


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    return make_tiny_causal(tmp_path_factory.mktemp("tiny_gpt2"), "gpt2")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return make_tiny_causal(tmp_path_factory.mktemp("tiny_llama"), "llama")


@pytest.fixture()
def date_files(tmp_path) -> dict[str, Path]:
    files = {}
    for name, n, seed in [("train", 320, 1), ("validation", 40, 2)]:
        files[name] = tmp_path / f"{name}.csv"
        date_rows(n, seed).to_csv(files[name], index=False)
    return files


@pytest.fixture()
def prompt_files(tmp_path) -> dict[str, Path]:
    """The dates as prompt/completion pairs, and the same as chat conversations."""
    files = {}
    for name, n, seed in [("train", 320, 1), ("validation", 40, 2)]:
        frame = date_rows(n, seed)
        files[name] = tmp_path / f"{name}.jsonl"
        with files[name].open("w") as out:
            for source, target in zip(frame.source, frame.target):
                out.write(json.dumps({"prompt": f"{source} ->", "completion": f" {target}"}) + "\n")
    return files
