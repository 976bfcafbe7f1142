"""A `head:` section on text models: new layers in place of the output layer, trained, saved, reloaded, plain code."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from lobell.config import load_config
from lobell.data.text import LengthGroupedBatches
from lobell.models.text import TextAdapter
from lobell.training.runner import train

HEAD = {"hidden": [16], "dropout": 0.1, "batch_norm": True, "activation": "gelu"}


def _tiny_encoder(kind: str, tiny_bert, directory):
    """A 1-block, 32-wide DistilBERT or RoBERTa saved with the tiny BERT's tokenizer (any tokenizer does here)."""
    from transformers import DistilBertConfig, DistilBertModel, RobertaConfig, RobertaModel

    shutil.copytree(tiny_bert, directory)
    for weights in directory.glob("*.safetensors"):
        weights.unlink()
    (directory / "config.json").unlink()
    torch.manual_seed(0)
    if kind == "distilbert":
        model = DistilBertModel(DistilBertConfig(vocab_size=64, dim=32, n_layers=1, n_heads=2, hidden_dim=64,
                                                 max_position_embeddings=64))
    else:
        model = RobertaModel(RobertaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                           intermediate_size=64, max_position_embeddings=80, pad_token_id=0))
    model.save_pretrained(directory)
    return directory


@pytest.mark.parametrize("kind, output_layer", [("bert", "classifier"), ("distilbert", "classifier"),
                                                ("roberta", "classifier.out_proj")])
def test_head_replaces_the_last_linear_of_the_task_models_head(kind, output_layer, tiny_bert, tmp_path):
    path = tiny_bert if kind == "bert" else _tiny_encoder(kind, tiny_bert, tmp_path / kind)
    adapter = TextAdapter.from_pretrained(str(path), 3, "classification", ["a", "b", "c"], head=HEAD)
    new = adapter.model.get_submodule(output_layer)
    assert [type(layer).__name__ for layer in new] == ["Linear", "BatchNorm1d", "GELU", "Dropout", "Linear"]
    assert new[0].in_features == 32 and new[0].out_features == 16 and new[-1].out_features == 3
    assert adapter.head == {"in_features": 32, **HEAD, "classifier": output_layer}
    assert adapter.model.config.lobell_head == adapter.head
    head_group = adapter.layer_map.groups[-1]
    assert head_group.is_head
    assert {f"{output_layer}.{n}" for n, _ in new.named_parameters()} <= set(head_group.param_names)
    if kind == "distilbert":  # the layers before the output layer stay, as for images
        assert isinstance(adapter.model.pre_classifier, nn.Linear)
    batch = {"input_ids": torch.randint(5, 30, (4, 9)), "attention_mask": torch.ones(4, 9, dtype=torch.long)}
    assert adapter.forward(adapter.model.eval(), batch).shape == (4, 3)


def test_trained_head_survives_save_and_load(tiny_bert, tmp_path):
    adapter = TextAdapter.from_pretrained(str(tiny_bert), 2, "classification", ["neg", "pos"], head=HEAD)
    model = adapter.model.train()
    batch = {"input_ids": torch.randint(5, 30, (6, 9)), "attention_mask": torch.ones(6, 9, dtype=torch.long)}
    for _ in range(3):  # move the batch-norm statistics and weights away from their initial values
        adapter.forward(model, batch).sum().backward()
        with torch.no_grad():
            for param in model.parameters():
                param -= 0.01 * param.grad if param.grad is not None else 0
    adapter.save(tmp_path, {"labels": ["neg", "pos"]})
    assert json.loads((tmp_path / "config.json").read_text())["lobell_head"]["classifier"] == "classifier"
    assert json.loads((tmp_path / "lobell.json").read_text())["head"]["hidden"] == [16]
    again = TextAdapter.load(tmp_path)
    assert again.head == adapter.head and not again.model.training
    assert again.layer_map.groups[-1].param_names == adapter.layer_map.groups[-1].param_names
    assert torch.equal(adapter.forward(model.eval(), batch), adapter.forward(again.model, batch))


def test_plain_from_pretrained_alone_would_lose_the_head(tiny_bert, tmp_path):
    """Why the card's snippet rebuilds the head: transformers leaves the replaced classifier's keys unused."""
    from transformers import AutoModelForSequenceClassification

    TextAdapter.from_pretrained(str(tiny_bert), 2, "classification", head=HEAD).save(tmp_path)
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert isinstance(plain.classifier, nn.Linear)  # a fresh random layer, not the trained head


def test_text_run_with_a_head_learns_and_its_model_card_snippet_rebuilds_it(text_overrides, sentiment_files, capsys):
    from lobell.predict import Predictor

    overrides = [*text_overrides, "head.hidden=[16]", "head.dropout=0.1", "epochs=3"]
    result = train(load_config(None, overrides), quiet=True)
    assert result.metrics["validation"]["accuracy"] > 0.85 > result.metrics["before"]["accuracy"]
    model_dir = result.run_dir / "model"
    predictor = Predictor.from_run(result.run_dir)
    assert predictor.adapter.head["hidden"] == [16]
    texts = pd.read_csv(sentiment_files["test"]).text.tolist()[:8]
    expected = predictor.logits(texts)

    card = (model_dir / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.DOTALL).group(1)
    assert "nn.BatchNorm1d(16)" in code and "load_state_dict" in code
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(compile(code, "model-card", "exec"), namespace)  # noqa: S102 - the card's own snippet is what is tested
    assert out.getvalue().strip() in ("neg", "pos")
    model, tokenizer = namespace["model"], namespace["tokenizer"]
    with torch.no_grad():
        plain = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(plain, expected, atol=1e-5)


def test_text_config_accepts_a_head_section(tiny_bert):
    cfg = load_config(None, [f"model={tiny_bert}", "head.hidden=[64, 32]", "head.activation=tanh"])
    assert cfg.head.hidden == [64, 32] and cfg.task == "text-classification"


def test_a_lone_last_example_is_left_out_of_training_batches_only_with_batch_norm():
    lengths = list(range(3, 36))  # 33 examples: batches of 16, 16 and 1
    assert len(LengthGroupedBatches(lengths, 16)) == 3
    sampler = LengthGroupedBatches(lengths, 16, drop_single=True)
    batches = list(sampler)
    assert len(sampler) == len(batches) == 2 and all(len(batch) == 16 for batch in batches)
