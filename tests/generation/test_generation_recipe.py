"""The recipe's six choices for generators, and LoRA on a causal LM merged into a plain transformers model."""

from __future__ import annotations

import json

import torch
from generation_fixtures import prompt_files, tiny_gpt2  # noqa: F401 (fixtures)

from lobell import recipe
from lobell.config import load_config
from lobell.recipe import Profile
from lobell.training.runner import train


def _choices(problem: str, params: int) -> dict:
    modality = "seq2seq" if problem == "seq2seq" else "causal"
    family = "encoder-decoder" if problem == "seq2seq" else "decoder"
    cfg = load_config(None, [f"task={'seq2seq' if problem == 'seq2seq' else 'causal-lm'}"])
    choices = recipe.decide(cfg, Profile(modality, problem, family, params, 5000))
    return {key: value for choice in choices for key, value in choice.values.items()} | {
        "letters": "".join(c.letter for c in choices), "reasons": all(c.reason for c in choices)}


def test_six_choices_with_reasons_and_lora_above_the_named_size():
    from lobell.recipe_generation import LORA_ABOVE

    small, large = _choices("causal-lm", 124_000_000), _choices("causal-lm", LORA_ABOVE)
    assert small["letters"] == "LOBELL" and small["reasons"]
    assert small["strategy.name"] == "full" and large["strategy.name"] == "lora"
    assert large["optimizer.lr"] > small["optimizer.lr"]  # adapters start at zero: a higher LR
    assert small["strategy.backbone_lr_scale"] == 1.0 and small["data.completion_only_loss"] is True
    seq2seq = _choices("seq2seq", 60_000_000)
    assert seq2seq["strategy.name"] == "full" and seq2seq["batch_size"] == 16 and seq2seq["optimizer.name"] == "adamw"


def test_lora_on_gpt2_merges_into_a_plain_model(tiny_gpt2, prompt_files, tmp_path):
    from transformers import AutoModelForCausalLM

    overrides = ["task=causal-lm", f"model={tiny_gpt2}", f"data.train={prompt_files['train']}",
                 f"data.validation={prompt_files['validation']}", "epochs=1", "strategy=lora", "optimizer.lr=1e-2",
                 "batch_size=16", "precision=fp32", "generation.max_new_tokens=4", f"output_dir={tmp_path / 'run'}"]
    run = train(load_config(None, overrides), quiet=True)
    summary = json.loads((run.run_dir / "lora.json").read_text())
    assert summary["target_modules"] == ["c_attn"] and summary["merged"] and summary["trainable_share"] < 0.2
    merged = AutoModelForCausalLM.from_pretrained(run.run_dir / "model")
    base = AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    changed = {n for n, p in merged.named_parameters() if not torch.equal(p, dict(base.named_parameters())[n])}
    assert changed and all("c_attn" in n or "ln_f" in n for n in changed)  # only adapted layers and the head moved
    assert run.metrics["validation"]["loss"] < run.metrics["before"]["loss"]
