"""Layer-map contract: every parameter in exactly one group, input side first, the new head last."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lobell.models.text import TextAdapter, head_prefixes
from lobell.strategies.layer_map import build_layer_map


def assert_contract(model: nn.Module, layer_map, head_names: set[str]) -> None:
    names = [n for group in layer_map.groups for n in group.param_names]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters()), "groups must cover every parameter once"
    assert len(names) == len(set(names))
    assert layer_map.groups[-1].is_head and set(layer_map.groups[-1].param_names) == head_names
    assert not any(g.is_head for g in layer_map.groups[:-1])
    order = {n: i for i, (n, _) in enumerate(model.named_parameters())}
    firsts = [min(order[n] for n in g.param_names) for g in layer_map.groups[:-1]]
    assert firsts == sorted(firsts), "backbone groups must run from the input side up"


def test_tiny_bert_groups_are_embeddings_blocks_head(tiny_bert):
    adapter = TextAdapter.from_pretrained(str(tiny_bert), 3, "classification", ["a", "b", "c"])
    names = [g.name for g in adapter.layer_map.groups]
    assert names[0] == "bert.embeddings" and names[-1] == "head"
    assert any(n.startswith("bert.encoder.layer.0") for n in names) and any("layer.1" in n for n in names)
    assert_contract(adapter.model, adapter.layer_map, {"classifier.weight", "classifier.bias"})


def test_a_sentence_encoders_stale_pooler_trains_with_the_head(tiny_bert, tmp_path):
    import json
    import shutil

    pooler = {"bert.pooler.dense.weight", "bert.pooler.dense.bias"}
    plain = TextAdapter.from_pretrained(str(tiny_bert), 2, "classification", ["a", "b"])
    assert pooler.isdisjoint(plain.layer_map.groups[-1].param_names)  # BERT's own pooler: pre-trained backbone
    sentence = shutil.copytree(tiny_bert, tmp_path / "sentence-encoder")
    modules = [{"idx": 0, "name": "0", "path": "", "type": "Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "Pooling"}]
    (sentence / "modules.json").write_text(json.dumps(modules))
    (sentence / "1_Pooling").mkdir()
    (sentence / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    adapter = TextAdapter.from_pretrained(str(sentence), 2, "classification", ["a", "b"])
    assert torch.equal(adapter.model.bert.pooler.dense.weight, plain.model.bert.pooler.dense.weight)  # kept, not reset
    assert_contract(adapter.model, adapter.layer_map, pooler | {"classifier.weight", "classifier.bias"})


def _hf_models():
    from transformers import (BertConfig, BertForSequenceClassification, DistilBertConfig,
                              DistilBertForSequenceClassification, ViTConfig, ViTForImageClassification,
                              Wav2Vec2Config, Wav2Vec2ForSequenceClassification)

    small = {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 64}
    yield BertForSequenceClassification(BertConfig(vocab_size=50, **small)), 4
    yield ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, num_labels=3, **small)), 4
    yield Wav2Vec2ForSequenceClassification(Wav2Vec2Config(vocab_size=10, conv_dim=(16, 16), conv_stride=(5, 2),
                                                            conv_kernel=(10, 3), num_feat_extract_layers=2,
                                                            num_conv_pos_embeddings=16,
                                                            num_conv_pos_embedding_groups=2, **small)), 4
    yield DistilBertForSequenceClassification(DistilBertConfig(vocab_size=50, dim=32, n_layers=4, n_heads=2,
                                                               hidden_dim=64)), 4


@pytest.mark.parametrize("model, blocks", list(_hf_models()), ids=["bert", "vit", "wav2vec2", "distilbert"])
def test_transformers_encoders_find_their_block_list_generically(model, blocks):
    heads = head_prefixes(model)
    layer_map = build_layer_map(model, heads, "test")
    head_names = {n for n, _ in model.named_parameters() if any(n.startswith(h + ".") for h in heads)}
    assert_contract(model, layer_map, head_names)
    block_groups = [g for g in layer_map.groups if any(f"layer.{i}." in g.param_names[0] or f"layers.{i}." in
                                                       g.param_names[0] for i in range(blocks))]
    assert len(block_groups) >= blocks - 1, [g.name for g in layer_map.groups]


def test_any_module_falls_back_to_ordered_chunks():
    model = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.Linear(64, 2))
    layer_map = build_layer_map(model, ["5"], "fallback")
    assert [g.name for g in layer_map.groups][-1] == "head" and len(layer_map) >= 3
    assert_contract(model, layer_map, {"5.weight", "5.bias"})


def test_layer_map_works_on_the_meta_device(tiny_bert):
    with torch.device("meta"):
        adapter = TextAdapter.from_pretrained(str(tiny_bert), 2, "classification", ["a", "b"], weights=False)
    assert next(adapter.model.parameters()).device.type == "meta"
    assert_contract(adapter.model, adapter.layer_map, {"classifier.weight", "classifier.bias"})
