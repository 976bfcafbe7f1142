"""The frozen-feature cache: the head split is exact, cached epochs never run the backbone, a cached
run learns what an uncached one does, and the key changes with model weights, data and preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from conftest import POSITIVE, make_tiny_bert
from vision_fixtures import colour_folders, image_overrides  # noqa: F401

from lobell.config import load_config
from lobell.data.image import ImageDataset
from lobell.data.text import TokenizedText
from lobell.models.text import TextAdapter
from lobell.models.vision import VisionAdapter
from lobell.strategies.plans import apply_stage, build_plan
from lobell.training import runner
from lobell.training.feature_cache import HeadOnly, cache_key, check_split, reason_off
from lobell.training.runner import train


def _text_adapter(model_type: str, tiny_bert, pooler_is_new: bool = False) -> TextAdapter:
    """A tiny random sequence classifier of `model_type` (BERT: the fixture, as lobell loads it)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    if model_type == "bert":
        adapter = TextAdapter.from_pretrained(str(tiny_bert), 3, "classification")
        if pooler_is_new:  # a sentence encoder's checkpoint has no pooler: it joins the new head
            adapter = TextAdapter(adapter.model, adapter.tokenizer, adapter.name,
                                  {"bert.pooler.dense.weight", "bert.pooler.dense.bias"})
        return adapter
    sizes = {"distilbert": {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64},
             "roberta": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
             "electra": {"hidden_size": 32, "embedding_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "intermediate_size": 64}}[model_type]
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, vocab_size=64, max_position_embeddings=72, num_labels=3, **sizes)
    return TextAdapter(AutoModelForSequenceClassification.from_config(config),
                       AutoTokenizer.from_pretrained(tiny_bert), model_type)


def _text_batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    input_ids = torch.randint(5, 50, (4, 9))  # inside the fixture vocabulary (59)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0  # padding: the head must read the same position as the full model
    return {"input_ids": input_ids, "attention_mask": attention_mask}


@pytest.mark.parametrize("model_type, pooler_is_new", [("bert", False), ("bert", True), ("distilbert", False),
                                                       ("roberta", False), ("electra", False)])
def test_text_head_split_is_exact(model_type, pooler_is_new, tiny_bert):
    adapter = _text_adapter(model_type, tiny_bert, pooler_is_new)
    model, batch = adapter.model.eval(), _text_batch()
    with torch.no_grad():
        features = adapter.forward_features(model, batch)
        assert features.shape == (4, 32), "one vector per example is cached"
        torch.testing.assert_close(adapter.forward_head(model, features), adapter.forward(model, batch),
                                   rtol=0, atol=1e-6)
    _head_only(adapter)
    assert check_split(adapter, model, batch, "no", Accelerator(cpu=True)) is None


@pytest.mark.parametrize("name", ["timm/test_vit", "timm/test_efficientnet", "timm/test_convnext",
                                  "torchvision/resnet18", "torchvision/mobilenet_v2"])
@pytest.mark.parametrize("head", [None, {"hidden": [16], "dropout": 0.3, "batch_norm": True, "activation": "relu"}])
def test_vision_head_split_is_exact(name, head):
    torch.manual_seed(0)
    adapter = VisionAdapter.from_pretrained(name, 3, weights="random", image_size=32, head=head)
    model, batch = adapter.model.eval(), {"pixel_values": torch.randn(4, 3, 32, 32)}
    with torch.no_grad():
        features = adapter.forward_features(model, batch)
        assert features.ndim == 2, "pooled features, not feature maps, are cached"
        torch.testing.assert_close(adapter.forward_head(model, features), adapter.forward(model, batch),
                                   rtol=0, atol=1e-5)
    _head_only(adapter)
    assert check_split(adapter, model, batch, "no", Accelerator(cpu=True)) is None


def test_split_check_refuses_what_would_train_wrongly(tiny_bert):
    adapter = _text_adapter("bert", tiny_bert)
    model, batch, accelerator = adapter.model, _text_batch(), Accelerator(cpu=True)
    _head_only(adapter)
    model.bert.encoder.layer[1].output.dense.weight.requires_grad_(True)  # trains, but sits before the features
    assert "before the head's input" in check_split(adapter, model, batch, "no", accelerator)
    _head_only(adapter)
    model.bert.pooler.dense.bias.requires_grad_(True)  # frozen part per the layer map, yet trainable
    assert "before the head's input" in check_split(adapter, model, batch, "no", accelerator)
    albert = _albert(tiny_bert)
    _head_only(albert)
    assert "'albert'" in check_split(albert, albert.model, batch, "no", accelerator)


def _albert(tiny_bert) -> TextAdapter:
    from transformers import AlbertConfig, AlbertForSequenceClassification, AutoTokenizer

    config = AlbertConfig(vocab_size=64, embedding_size=16, hidden_size=32, num_hidden_layers=1,
                          num_attention_heads=2, intermediate_size=64, max_position_embeddings=72)
    return TextAdapter(AlbertForSequenceClassification(config), AutoTokenizer.from_pretrained(tiny_bert), "albert")


def _head_only(adapter) -> None:
    from lobell.config import StrategyConfig

    apply_stage(adapter.model, adapter.layer_map,
                build_plan(StrategyConfig(name="feature-extraction"), adapter.layer_map, 1)[0])


def _count_backbone_per_epoch(monkeypatch, module_of) -> list[int]:
    """Backbone forward calls inside each training epoch (the epoch's validation pass included)."""
    calls, counts, hooked = [0], [], []
    original = runner.train_epoch

    def counting(accelerator, adapter, model, *args, **kwargs):
        if not hooked:
            hooked.append(module_of(accelerator.unwrap_model(model)).register_forward_hook(
                lambda *_: calls.__setitem__(0, calls[0] + 1)))
        before = calls[0]
        stats = original(accelerator, adapter, model, *args, **kwargs)
        counts.append(calls[0] - before)
        return stats

    monkeypatch.setattr(runner, "train_epoch", counting)
    return counts


def test_cached_epochs_never_run_the_backbone(text_overrides, monkeypatch):
    counts = _count_backbone_per_epoch(monkeypatch, lambda model: model.bert.encoder)
    head_batches, head_forward = [], HeadOnly.forward
    monkeypatch.setattr(HeadOnly, "forward", lambda self, model, batch: head_batches.append(len(batch["index"]))
                        or head_forward(self, model, batch))
    result = train(load_config(None, text_overrides + ["strategy=two-stage", "strategy.frozen_epochs=2", "epochs=3",
                                                       "early_stopping.patience=null"]), quiet=True)
    assert counts[:2] == [0, 0], "head-only epochs train on cached features"
    assert counts[2] > 0, "once the backbone trains, it runs at every step"
    # 400 training examples in batches of 16 for 2 epochs; 80 validation in batches of 32, 3 times (before, 1, 2)
    assert len(head_batches) == 2 * 25 + 3 * 3 and max(head_batches) == 32
    timing = result.metrics["timing"]
    assert timing["cached_epochs"] == 2 and timing["feature_cache_examples"] == 400 + 80


def test_a_head_only_run_runs_the_backbone_once_per_example(text_overrides, monkeypatch):
    from transformers.models.bert.modeling_bert import BertEncoder

    examples, encoder_forward = [], BertEncoder.forward
    monkeypatch.setattr(BertEncoder, "forward", lambda self, hidden_states, *args, **kwargs: examples.append(
        hidden_states.shape[0]) or encoder_forward(self, hidden_states, *args, **kwargs))
    result = train(load_config(None, text_overrides + ["strategy=feature-extraction", "epochs=3"]), quiet=True)
    assert result.metrics["timing"]["cached_epochs"] == 3
    # the cache (400 training and 80 validation examples), the split check (4 examples, model and
    # features), the test set (80): the final validation predictions come from the cached features too
    assert sum(examples) == 400 + 80 + 2 * 4 + 80
    best = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").open()][result.metrics["best_epoch"]]
    assert result.metrics["validation"]["loss"] == pytest.approx(best["validation"]["loss"], abs=1e-6)


def _bert_without_encoder_dropout(directory):
    """The fixture BERT with dropout only in its head: frozen layers then behave alike in train and
    eval mode, so a cached and an uncached run must take the same steps."""
    make_tiny_bert(directory)
    config = json.loads((directory / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.3)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_cached_text_run_matches_uncached_run(text_overrides, tmp_path):
    bert = _bert_without_encoder_dropout(tmp_path / "bert")
    overrides = [o for o in text_overrides if not o.startswith(("model=", "output_dir="))] + [
        f"model={bert}", "strategy=feature-extraction", "epochs=3", "early_stopping.patience=null"]
    runs = {cache: train(load_config(None, overrides + [f"speed.cache_features={cache}",
                                                        f"output_dir={tmp_path / str(cache)}"]), quiet=True)
            for cache in (True, False)}
    cached, plain = (_epochs(runs[c].run_dir) for c in (True, False))
    assert runs[True].metrics["timing"]["cached_epochs"] == 3 and "cached_epochs" not in runs[False].metrics["timing"]
    for a, b in zip(cached, plain):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5), "same batches, same dropout masks"
        assert a["validation"]["loss"] == pytest.approx(b["validation"]["loss"], abs=1e-5)
    assert abs(plain[-1]["train_loss"] - plain[0]["train_loss"]) > 1e-3, "the head really trained"


def test_cached_image_run_matches_uncached_run(colour_folders, tmp_path):  # noqa: F811
    results = {}
    for cache in (True, False):
        overrides = image_overrides(colour_folders["train"], colour_folders["validation"], tmp_path / str(cache), {
            "model": "torchvision/mobilenet_v2", "model_weights": "random", "strategy": "feature-extraction",
            "augment": "none", "optimizer.lr": 1e-2, "epochs": 2, "early_stopping.patience": "null",
            "speed.cache_features": cache})
        results[cache] = train(load_config(None, overrides), quiet=True)
    cached, plain = (_epochs(results[c].run_dir) for c in (True, False))
    assert results[True].metrics["timing"]["cached_epochs"] == 2
    for a, b in zip(cached, plain):  # the classifier's own dropout (0.2) runs in both, with the same masks
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4)
        assert a["validation"]["accuracy"] == b["validation"]["accuracy"]


def _epochs(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][1:]


def test_augmentation_and_other_inputs_that_change_turn_the_cache_off(tiny_bert):
    image = VisionAdapter.from_pretrained("timm/test_vit", 2, weights="random", image_size=32)
    text = TextAdapter.from_pretrained(str(tiny_bert), 2, "classification")

    def off(adapter, *overrides, processes=1):
        task = "image-classification" if adapter is image else "text-classification"
        return reason_off(load_config(None, [f"task={task}", *overrides]), adapter, processes)

    assert "augment 'light' changes the inputs every epoch" in off(image)
    assert off(image, "augment=none") is None and off(text) is None
    assert "mixup" in off(image, "augment=none", "mixup.mixup_alpha=0.2")
    assert off(text, "speed.cache_features=false") == "speed.cache_features=false"
    assert "2 processes" in off(text, processes=2)
    assert off(image, "augment=none", "strategy.train_bn=true") is None, "test_vit has no batch norm"
    resnet = VisionAdapter.from_pretrained("torchvision/resnet18", 2, weights="random")
    assert "batch-norm" in reason_off(load_config(None, ["task=image-classification", "augment=none",
                                                         "strategy.train_bn=true"]), resnet, 1)


def test_log_says_why_the_cache_is_off(colour_folders, tmp_path, capsys):  # noqa: F811
    overrides = image_overrides(colour_folders["train"], colour_folders["validation"], tmp_path / "run", {
        "strategy": "feature-extraction", "epochs": 1, "model_weights": "random", "augment": "light"})
    result = train(load_config(None, overrides))  # augment set: epochs=1 alone would make the recipe pick none
    assert "feature cache off: augment 'light' changes the inputs every epoch" in capsys.readouterr().err
    assert "cached_epochs" not in result.metrics["timing"]


def test_key_follows_weights_data_and_preprocessing(tiny_bert, tmp_path):
    adapter = TextAdapter.from_pretrained(str(tiny_bert), 2, "classification")
    _head_only(adapter)
    model, texts = adapter.model, [" ".join(["the film was"] * 6 + [word]) for word in POSITIVE]
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}

    def key(texts=texts, max_length=64, targets=None):
        targets = np.zeros(len(texts), dtype=np.int64) if targets is None else targets
        data = {"train": TokenizedText(adapter.tokenizer, texts, targets, max_length)}
        return cache_key(adapter, model, trainable, data, "no")

    first = key()
    assert key() == first, "the same inputs give the same key"
    assert key(max_length=8) != first, "max_length changes the tokens the backbone sees"
    assert key(texts=texts[:-1] + ["the plot was dull"]) != first
    assert key(targets=np.ones(len(texts), dtype=np.int64)) != first
    assert cache_key(adapter, model, trainable, {}, "bf16") != cache_key(adapter, model, trainable, {}, "no"), \
        "bf16 features differ from fp32 ones"
    with torch.no_grad():
        model.classifier.weight.add_(1.0)  # the head trains: its weights are not part of the key
    assert key() == first
    with torch.no_grad():
        model.bert.encoder.layer[0].output.dense.bias.add_(1e-3)
    assert key() != first, "frozen weights changed"


def test_image_key_follows_files_and_transform(colour_folders, tmp_path):  # noqa: F811
    adapter = VisionAdapter.from_pretrained("timm/test_vit", 2, weights="random", image_size=32)
    model = adapter.model
    paths = sorted(str(p) for p in (colour_folders["train"] / "red").glob("*.png"))[:4]
    copies = []
    for i, path in enumerate(paths):
        copies.append(tmp_path / f"{i}.png")
        copies[-1].write_bytes(Path(path).read_bytes())
    targets = np.zeros(4, dtype=np.int64)

    def key(transform=None):
        transform = transform or adapter.preprocessing.eval_transform()
        return cache_key(adapter, model, set(), {"train": ImageDataset([str(c) for c in copies], targets, transform)},
                         "no")

    first = key()
    assert key() == first
    assert key(VisionAdapter.from_pretrained("timm/test_vit", 2, weights="random",
                                             image_size=48).preprocessing.eval_transform()) != first
    copies[0].write_bytes(Path(paths[1]).read_bytes())  # another image under the same name
    assert key() != first


def test_a_cache_folder_is_reused_by_later_runs_and_invalidated_by_a_change(text_overrides, tmp_path):
    folder = tmp_path / "features"
    base = [o for o in text_overrides if not o.startswith("output_dir=")] + [
        "strategy=feature-extraction", "epochs=1", f"speed.feature_cache_dir={folder}"]

    def run(name, *extra):
        return train(load_config(None, base + [*extra, f"output_dir={tmp_path / name}"]), quiet=True)

    first = run("first")
    assert not first.metrics["timing"]["feature_cache_from_disk"] and len(list(folder.glob("*.pt"))) == 1
    again = run("again", "optimizer.lr=1e-2")  # another head LR: the same features
    assert again.metrics["timing"]["feature_cache_from_disk"]
    shorter = run("shorter", "data.max_length=8")
    assert not shorter.metrics["timing"]["feature_cache_from_disk"] and len(list(folder.glob("*.pt"))) == 2


def test_a_run_interrupted_in_a_cached_epoch_resumes_exactly(text_overrides, tmp_path, monkeypatch):
    from lobell.training.runner import Interrupted

    common = [o for o in text_overrides if not o.startswith("output_dir=")] + [
        "strategy=feature-extraction", "epochs=2", "early_stopping.patience=null"]
    reference = train(load_config(None, common + [f"output_dir={tmp_path / 'reference'}"]), quiet=True)
    original, calls = runner.train_epoch, []

    def interrupted_in_epoch_two(*args, after_step, **kwargs):
        calls.append(1)

        def step(number: int) -> None:
            after_step(number)
            if len(calls) == 2 and number == 3:
                raise KeyboardInterrupt

        return original(*args, after_step=step, **kwargs)

    monkeypatch.setattr(runner, "train_epoch", interrupted_in_epoch_two)
    cfg = load_config(None, common + [f"output_dir={tmp_path / 'resumed'}"])
    with pytest.raises(Interrupted):
        train(cfg, quiet=True)
    monkeypatch.setattr(runner, "train_epoch", original)
    resumed = train(cfg, quiet=True, resume=True)
    assert resumed.metrics["timing"]["cached_epochs"] == 1, "the resumed run rebuilt the cache and skipped 3 batches"
    for key in ("validation", "test", "best_epoch"):
        assert resumed.metrics[key] == reference.metrics[key]
