"""strategy=lora: only the adapters and the head train; model/ loads with plain transformers, or with peft."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import sentiment_rows
from lobell.config import LoraConfig, StrategyConfig, load_config
from lobell.errors import LobellError
from lobell.predict import Predictor
from lobell.strategies.lora import FROZEN_GROUP, apply_lora
from lobell.strategies.plans import apply_stage, build_plan
from lobell.training.runner import train

PEFT = "base_model.model."
TEXTS = ["the film was good", "a boring plot and a dull actor", "quite a lovely story", "the scene was awful"]


def _overrides(tiny_bert, files, out, *extra: str) -> list[str]:
    # LoRA's LR is the head's (the adapters are new weights); 3e-2 trains the tiny random BERT in a few epochs.
    return [f"model={tiny_bert}", f"data.train={files['train']}", f"data.validation={files['validation']}",
            "strategy=lora", "lora.r=4", "optimizer.lr=3e-2", "scheduler.warmup_ratio=0", "batch_size=16",
            "epochs=5", "early_stopping.patience=null", "precision=fp32", f"output_dir={out}", *extra]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("lora_data")
    out = {}
    for name, n, seed in [("train", 400, 1), ("validation", 80, 2)]:
        out[name] = folder / f"{name}.csv"
        sentiment_rows(n, seed).to_csv(out[name], index=False)
    return out


@pytest.fixture(scope="module")
def lora_run(tiny_bert, files, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora_run") / "run"
    return train(load_config(None, _overrides(tiny_bert, files, out)), quiet=True)


def _original_weights(tiny_bert) -> dict[str, torch.Tensor]:
    """The pre-trained encoder as saved (BertModel keys), named as inside the classifier."""
    return {f"bert.{k}": v for k, v in load_file(tiny_bert / "model.safetensors").items()}


def test_only_adapters_and_head_train_and_every_base_weight_is_unchanged(lora_run, tiny_bert):
    run = lora_run.run_dir
    summary = json.loads((run / "lora.json").read_text())
    # 2 blocks x (query, value) x (A: 4x32 + B: 32x4), plus the 2x32 classifier and its bias.
    assert summary["trainable_params"] == 2 * 2 * (4 * 32 + 32 * 4) + 2 * 32 + 2
    assert summary["trainable_share"] < 0.2
    assert summary["training_state_mb"] < summary["full_training_state_mb"]
    assert lora_run.metrics["validation"]["accuracy"] > 0.75  # the adapters learned the task (chance: ~0.5)

    trained = load_file(run / "checkpoints/best/best.safetensors")  # the PeftModel's own state dict
    for name, original in _original_weights(tiny_bert).items():
        if name == "bert.embeddings.position_ids":
            continue
        adapted = name.replace(".query.", ".query.base_layer.").replace(".value.", ".value.base_layer.")
        assert torch.equal(trained[PEFT + adapted], original), name  # bit for bit
    assert all(trained[k].abs().sum() > 0 for k in trained if "lora_B" in k)  # B starts at zero: it moved
    head, initial = (trained[f"{PEFT}classifier.{part}.weight"] for part in ("modules_to_save.default", "original_module"))
    assert not torch.equal(head, initial)


def test_merged_model_is_base_plus_adapters_and_loads_with_plain_transformers(lora_run, tiny_bert):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = lora_run.run_dir
    assert (run / "model/model.safetensors").is_file() and not (run / "model/adapter_config.json").exists()
    trained = load_file(run / "checkpoints/best/best.safetensors")
    model = AutoModelForSequenceClassification.from_pretrained(run / "model").eval()
    merged = dict(model.named_parameters())
    scale = 16 / 4  # lora.alpha / lora.r
    for name, original in _original_weights(tiny_bert).items():
        if name not in merged:
            continue
        layer = name.removesuffix(".weight")
        if layer.endswith((".query", ".value")):
            delta = trained[f"{PEFT}{layer}.lora_B.default.weight"] @ trained[f"{PEFT}{layer}.lora_A.default.weight"]
            torch.testing.assert_close(merged[name].detach(), original + scale * delta, rtol=0, atol=1e-6)
        else:
            assert torch.equal(merged[name].detach(), original), name
    # The head is the trained copy peft kept (modules_to_save), not a re-initialised layer.
    assert torch.equal(merged["classifier.weight"].detach(), trained[f"{PEFT}classifier.modules_to_save.default.weight"])

    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    with torch.no_grad():
        plain = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(Predictor.from_run(run).logits(TEXTS), plain, atol=1e-5)
    card, report = (run / "model/README.md").read_text(), (run / "report.html").read_text()
    assert "## LoRA" in card and "trainable parameters" in card
    assert "LoRA and distillation" in report and 'id="lora"' in report


def test_merge_false_keeps_a_peft_adapter_folder_with_the_trained_head(tiny_bert, files, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = train(load_config(None, _overrides(tiny_bert, files, tmp_path / "run", "lora.merge=false", "epochs=2")),
                quiet=True).run_dir
    model_dir = run / "model"
    assert (model_dir / "adapter_config.json").is_file() and not (model_dir / "model.safetensors").exists()
    saved = load_file(model_dir / "adapter_model.safetensors")
    assert any("classifier" in key for key in saved) and any("lora_A" in key for key in saved)

    # A fresh base gets a newly initialised classifier: only the saved head makes the logits match.
    torch.manual_seed(123)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    model = PeftModel.from_pretrained(base, model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        logits = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(Predictor.from_run(run).logits(TEXTS), logits, atol=1e-5)
    trained = load_file(run / "checkpoints/best/best.safetensors")
    head = model.base_model.model.classifier.modules_to_save["default"].weight
    assert torch.equal(head.detach(), trained[f"{PEFT}classifier.modules_to_save.default.weight"])
    assert "PeftModel.from_pretrained" in (model_dir / "README.md").read_text()


def test_lora_run_resumes_from_its_epoch_checkpoint(tiny_bert, files, tmp_path):
    reference = train(load_config(None, _overrides(tiny_bert, files, tmp_path / "reference", "epochs=2")), quiet=True)
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(reference.run_dir, resumed_dir)
    first, last = sorted((resumed_dir / "checkpoints").glob("step-*"))
    shutil.rmtree(last)  # as if killed after epoch 1
    shutil.rmtree(resumed_dir / "model")
    (resumed_dir / "metrics.json").unlink()
    cfg = load_config(resumed_dir / "config.yaml")
    resumed = train(cfg, quiet=True, resume=True)
    assert resumed.metrics["validation"] == reference.metrics["validation"]


def test_layer_map_groups_every_parameter_once_and_the_plan_trains_adapters_and_head():
    from lobell.models.vision import VisionAdapter

    adapter = VisionAdapter.from_pretrained("timm/vit_tiny_patch16_224", 3, weights="random", image_size=32)
    run = apply_lora(adapter, LoraConfig(r=2))
    assert run.summary.target_modules == ["qkv"]  # a ViT's fused attention projection
    names = [n for g in adapter.layer_map.groups for n in g.param_names]
    assert sorted(names) == sorted(n for n, _ in adapter.model.named_parameters()) and len(set(names)) == len(names)
    assert adapter.layer_map.groups[0].name == FROZEN_GROUP and adapter.layer_map.groups[-1].is_head
    stage, = build_plan(StrategyConfig(name="lora"), adapter.layer_map, epochs=2)
    apply_stage(adapter.model, adapter.layer_map, stage)
    trainable = [n for n, p in adapter.model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n or ".modules_to_save." in n for n in trainable)
    assert adapter.forward(adapter.model, {"pixel_values": torch.randn(2, 3, 32, 32)}).shape == (2, 3)


def test_convolutions_and_unknown_layers_are_clear_errors():
    from lobell.models.vision import VisionAdapter

    with pytest.raises(LobellError, match="adapts linear layers.*none outside its head"):
        apply_lora(VisionAdapter.from_pretrained("torchvision/resnet18", 3, weights="random"), LoraConfig())
    adapter = VisionAdapter.from_pretrained("torchvision/resnet18", 3, weights="random")
    with pytest.raises(LobellError, match=r"lora.target_modules='conv1' selects 'conv1', a convolution"):
        apply_lora(adapter, LoraConfig(target_modules=["conv1"]))
    with pytest.raises(LobellError, match=r"lora.target_modules='qkv' matches no layer"):
        apply_lora(adapter, LoraConfig(target_modules=["qkv"]))


def test_lora_keys_are_checked_in_the_config():
    with pytest.raises(LobellError, match="lora.r applies to strategy=lora, not strategy=full"):
        load_config(None, ["lora.r=4"])
    with pytest.raises(LobellError, match="lora.merge=false keeps adapters for text models only"):
        load_config(None, ["task=image-classification", "model=resnet18", "strategy=lora", "lora.merge=false"])
    assert load_config(None, ["strategy=lora", "lora.target_modules=[query,key,value,dense]"]).lora.r == 8


def test_lora_with_an_explicit_freeze_is_one_clear_error(tiny_bert, tmp_path):
    from lobell import TextClassifier

    clf = TextClassifier(str(tiny_bert), labels=["neg", "pos"], strategy="lora", output_dir=str(tmp_path / "run"),
                         quiet=True)
    clf.freeze_backbone()
    rows = sentiment_rows(40, 0)
    with pytest.raises(LobellError, match="strategy=lora wraps the model in LoRA adapters itself"):
        clf.fit(rows["text"].tolist(), rows["label"].tolist(), epochs=1)
