"""End-to-end text runs on the tiny BERT: learning, run folder contract, early stopping, reload."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import yaml

from lobell.config import load_config
from lobell.training.runner import train


def test_accuracy_rises_above_chance_and_run_folder_is_complete(text_overrides, tmp_path):
    result = train(load_config(None, text_overrides), quiet=True)
    run = result.run_dir
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["validation"]["accuracy"] > 0.85 > metrics["before"]["accuracy"]
    assert {"accuracy", "f1_macro"} <= set(metrics["test"])
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [0, 1, 2, 3, 4]
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["optimizer"]["weight_decay"] == 0.01 and resolved["scheduler"]["name"] == "linear"
    assert (run / "model" / "model.safetensors").is_file()


def test_saved_model_loads_with_plain_transformers_and_matches_lobell_predict(text_overrides, sentiment_files):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lobell.predict import Predictor

    run = train(load_config(None, text_overrides), quiet=True).run_dir
    texts = pd.read_csv(sentiment_files["test"]).text.tolist()[:20]
    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    model = AutoModelForSequenceClassification.from_pretrained(run / "model").eval()
    with torch.no_grad():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()
    plain = [model.config.id2label[i] for i in logits.argmax(axis=1)]
    table = Predictor.from_run(run).predict_table(texts)
    assert table.prediction.tolist() == plain
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(table.probability.to_numpy(), probs.max(axis=1), atol=1e-5)


def test_early_stopping_fires_and_restores_best_weights(text_overrides):
    # A learning rate of 0 means the monitored metric can never improve after epoch 1.
    overrides = text_overrides + ["optimizer.lr=1e-12", "epochs=6", "early_stopping.patience=2",
                                  "early_stopping.monitor=loss"]
    result = train(load_config(None, overrides), quiet=True)
    lines = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["epoch"] < 6, "early stopping never fired"
    best = min(lines[1:], key=lambda line: line["validation"]["loss"])
    assert result.metrics["best_epoch"] == best["epoch"]
    assert result.metrics["validation"]["loss"] == pytest.approx(best["validation"]["loss"], abs=1e-6)


def test_validation_split_is_stratified_when_no_file_given(text_overrides):
    overrides = [o for o in text_overrides if not o.startswith("data.validation")] + ["data.val_fraction=0.25", "epochs=1"]
    result = train(load_config(None, overrides), quiet=True)
    lines = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    # Stratified: each class holds its share of the training file in the held-out quarter (to one example).
    held_out = Counter(json.loads(line)["target"] for line in
                       (result.run_dir / "predictions_validation.jsonl").read_text().splitlines())
    source = Counter(pd.read_csv(load_config(None, overrides).data.train)["label"].astype(str))
    assert sum(held_out.values()) == round(0.25 * sum(source.values()))
    assert all(abs(held_out[label] - 0.25 * count) <= 1 for label, count in source.items()), (held_out, source)
