"""Fixtures: tiny random BERT encoders saved like hub checkpoints, and small labelled text files."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

POSITIVE = ["good", "great", "fine", "lovely", "superb", "brilliant", "moving", "funny"]
NEGATIVE = ["bad", "awful", "poor", "boring", "dull", "weak", "messy", "tedious"]
NEUTRAL = ["the", "film", "movie", "plot", "actor", "story", "was", "and", "a", "very", "quite", "scene"]


def require_tool(name: str, install: str) -> str:
    """The path of a system program a test needs. Missing: skipped locally, but a failure under
    `.ci/run` (LOBELL_CI=1), which installs it, so CI never passes by skipping."""
    import shutil

    path = shutil.which(name)
    if path is None:
        if os.environ.get("LOBELL_CI"):
            pytest.fail(f"{name} is not installed but CI must run this test: {install}")
        pytest.skip(f"{name} is not installed ({install})")
    return path


def make_tiny_bert(directory: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A 2-block, 32-wide BERT with a WordPiece tokenizer over the fixture words, saved like a hub model."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + POSITIVE + NEGATIVE + NEUTRAL + list("abcdefghijklmnopqrstuvwxyz")
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)}, model_max_length=64)
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=64)
    BertModel(config).save_pretrained(directory)
    return directory


def sentiment_rows(n: int, seed: int, classes: int = 2) -> pd.DataFrame:
    """Short reviews whose label is carried by a sentiment word among neutral words."""
    rng = random.Random(seed)
    words = [POSITIVE, NEGATIVE, NEUTRAL[:4]][:classes]
    names = ["pos", "neg", "meh"][:classes]
    rows = []
    for _ in range(n):
        label = rng.randrange(classes)
        text = rng.sample(NEUTRAL, rng.randint(2, 8)) + [rng.choice(words[label])]
        rng.shuffle(text)
        rows.append({"text": " ".join(text), "label": names[label]})
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture()
def sentiment_files(tmp_path) -> dict[str, Path]:
    files = {}
    for name, n, seed in [("train", 400, 1), ("validation", 80, 2), ("test", 80, 3)]:
        files[name] = tmp_path / f"{name}.csv"
        sentiment_rows(n, seed).to_csv(files[name], index=False)
    return files


@pytest.fixture()
def text_overrides(tiny_bert, sentiment_files, tmp_path) -> list[str]:
    """Config overrides for a quick run of the tiny BERT on the sentiment files."""
    return [f"model={tiny_bert}", f"data.train={sentiment_files['train']}",
            f"data.validation={sentiment_files['validation']}", f"data.test={sentiment_files['test']}",
            "optimizer.lr=3e-3", "strategy=full", "strategy.backbone_lr_scale=1.0", "scheduler.warmup_ratio=0", "batch_size=16", "epochs=4", "precision=fp32", f"output_dir={tmp_path / 'run'}"]


def packaged_minilm() -> Path | None:
    from lobell.models.hub import PACKAGED, package_dir

    package, sub, _ = PACKAGED["sentence-transformers/all-MiniLM-L6-v2"]
    root = package_dir(package)
    return root / sub if root is not None and (root / sub).is_dir() else None


@pytest.fixture()
def in_tmp_dir(tmp_path, monkeypatch):
    """Run in a fresh folder: API calls without output_dir write runs/... there, not into the repo."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(autouse=True, scope="session")
def _own_precision_cache(tmp_path_factory):
    """`precision: auto` caches its bf16/fp32 probe per machine; tests keep theirs out of ~/.cache."""
    import os

    os.environ.setdefault("LOBELL_CACHE_DIR", str(tmp_path_factory.mktemp("lobell_cache")))
