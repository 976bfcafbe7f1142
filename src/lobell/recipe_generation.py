"""The recipe's six choices for text generators (seq2seq, causal-lm), each with its reason.

Nothing in a generator is new: the LM head is the pre-trained one, so there is no fresh head that
needs a higher learning rate, and every group trains at the same LR (backbone_lr_scale 1). These
defaults follow transformers' translation/summarisation examples and common SFT practice; they
were checked only on tiny random models here (no pre-trained generator is available offline).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Choice:  # the same fields as recipe.Choice, which imports this module (no import cycle)
    letter: str
    name: str
    values: dict[str, Any]
    reason: str
    keys: list[str] = field(default_factory=list)
    source: str = "lobell"


# Above this many parameters, full fine-tuning's fp32 weights, gradients and AdamW moments (16 bytes
# a parameter: 16 GB at 1B) outgrow one common GPU: LoRA trains ~1% of that (the LoRA paper; QLoRA).
LORA_ABOVE = 1_000_000_000
LORA_LR = 2e-4  # QLoRA's and peft's examples for 1-7B decoders


def decide(p, budget) -> list[Choice]:
    """`p`: recipe.Profile; `budget`: recipe.Budget (what the user allowed)."""
    seq2seq = p.problem == "seq2seq"
    lora = p.params >= LORA_ABOVE
    return [_layers(p, lora), _optimizer(), _batch(seq2seq), _epochs(p, seq2seq), _loss(seq2seq),
            _learning_rate(p, seq2seq, lora)]


def _layers(p, lora: bool) -> Choice:
    if lora:
        return Choice("L", "Layers", {"strategy.name": "lora"},
                      f"{p.params / 1e9:.1f}B parameters (>= {LORA_ABOVE / 1e9:.0f}B): full fine-tuning's weights, "
                      f"gradients and AdamW state (~16 bytes a parameter) would not fit a common GPU; LoRA adapters "
                      f"train ~1% of them and are merged into the weights at the end")
    return Choice("L", "Layers", {"strategy.name": "full"},
                  f"a {p.params / 1e6:.1f}M-parameter generator: every layer trains (its LM head is pre-trained, "
                  f"not new, so a head-only or gradual plan has nothing new to settle first)")


def _optimizer() -> Choice:
    return Choice("O", "Optimizer", {"optimizer.name": "adamw", "optimizer.weight_decay": 0.01},
                  "AdamW, as transformers' seq2seq and causal-LM examples train; weight decay 0.01, never on "
                  "biases and norms")


def _batch(seq2seq: bool) -> Choice:
    if seq2seq:
        return Choice("B", "Batch size", {"batch_size": 16},
                      "16 pairs: transformers' translation and summarisation examples train 8-32 per device")
    return Choice("B", "Batch size", {"batch_size": 8},
                  "8 examples a step, packed into rows of data.max_length tokens: long sequences fill memory fast; "
                  "set batch_size=auto to fill a GPU")


def _epochs(p, seq2seq: bool) -> Choice:
    epochs = 3 if p.n_train >= 1000 else 5
    what = "translation/summarisation fine-tunes take 3-5 epochs" if seq2seq else \
        "supervised fine-tuning of a language model takes 2-5 epochs (more over-fits a small set)"
    return Choice("E", "Epochs", {"epochs": epochs, "early_stopping.patience": 2},
                  f"{what}; {p.n_train} examples -> {epochs} (early stopping on the validation "
                  f"{'chrF' if seq2seq else 'loss'}, patience 2)")


def _loss(seq2seq: bool) -> Choice:
    if seq2seq:
        return Choice("L", "Loss", {"loss.name": "auto"},
                      "token cross-entropy over the target tokens (teacher-forced), padding ignored")
    return Choice("L", "Loss", {"loss.name": "auto", "data.completion_only_loss": True},
                  "token cross-entropy on completions and assistant turns only: the prompt is given at "
                  "prediction time, so learning it spends capacity on text the model never has to write")


def _learning_rate(p, seq2seq: bool, lora: bool) -> Choice:
    if lora:
        lr, why = LORA_LR, f"LoRA adapters start at zero and take a higher LR ({LORA_LR:g}, QLoRA's)"
    elif seq2seq:
        lr, why = 1e-4, "1e-4: T5/BART fine-tuning with AdamW (T5's paper used 1e-3 with Adafactor)"
    else:
        lr = 2e-5 if p.params >= 100e6 else 5e-5
        why = f"{lr:g}: decoder SFT sits at 1e-5..5e-5 with AdamW; small models take the upper end"
    return Choice("L", "Learning rate", {"optimizer.lr": lr, "strategy.backbone_lr_scale": 1.0,
                                         "scheduler.name": "linear", "scheduler.warmup_ratio": 0.05},
                  f"{why}; every group at the same LR (no new head), linear decay after 5% warm-up")
