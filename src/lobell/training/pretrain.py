"""`pretrain:`: masked-LM continued pre-training before a text classifier trains (ULMFiT's order).

The classifier's run folder gets a `pretrain/` run folder of its own (a whole `task: masked-lm`
run: its config, log, metrics, report and a model/ folder that plain transformers loads); the
classifier then starts from `pretrain/model`. These helpers build that run's config and texts and
summarise it for the classifier's metrics.json and report; `runner.train` runs it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lobell.config import Config, DataConfig, StrategyConfig
from lobell.data.splits import Split, Splits
from lobell.data.tables import split_train_validation
from lobell.problems.masked_lm import MaskedLM

FOLDER = "pretrain"  # inside the classifier's run folder


def masked_lm_config(cfg: Config, run_dir: Path) -> Config:
    """The masked-LM run: the classifier's model, precision, seed and max_length; every layer trains at
    `pretrain.lr` (no recipe: its choices are the classifier's)."""
    pretrain = cfg.pretrain
    batch_size = pretrain.batch_size or (cfg.batch_size if cfg.batch_size != "auto" else 32)
    data = DataConfig(max_length=cfg.data.max_length, mlm_probability=pretrain.mlm_probability,
                      whole_word_mask=pretrain.whole_word_mask, val_fraction=pretrain.val_fraction)
    return Config(task="masked-lm", model=cfg.model, data=data, strategy=StrategyConfig(name="full"),
                  optimizer=cfg.optimizer.model_copy(update={"lr": pretrain.lr}), batch_size=batch_size,
                  epochs=pretrain.epochs, precision=cfg.precision, seed=cfg.seed, output_dir=run_dir / FOLDER,
                  recipe=False, max_grad_norm=cfg.max_grad_norm, speed=cfg.speed)


def masked_lm_splits(cfg: Config, splits: Splits) -> Splits:
    """The classifier's training texts plus `extra_text`, a share held back for perplexity. The
    classifier's validation and test texts stay out: its scores must not have seen them."""
    from lobell.data.masked_text import read_texts

    texts = list(splits.train.inputs)
    notes = [f"pretrain: {len(texts)} training texts"]
    if cfg.pretrain.extra_text is not None:
        extra = read_texts(cfg.pretrain.extra_text, cfg.data.text_column)
        texts += extra
        notes[0] += f" + {len(extra)} from {cfg.pretrain.extra_text}"
    train_idx, val_idx = split_train_validation(len(texts), None, cfg.pretrain.val_fraction, cfg.seed,
                                                source="the pretrain texts")
    part = lambda idx, source: Split([texts[i] for i in idx], np.zeros(len(idx), np.int64), source)  # noqa: E731
    notes.append(f"pretrain: {len(val_idx)} of them held back to measure perplexity")
    return Splits(part(train_idx, "pretrain texts"), part(val_idx, "pretrain texts (held back)"), None, None,
                  notes, MaskedLM())


def finished(run_dir: Path) -> bool:
    return (run_dir / FOLDER / "model").is_dir() and (run_dir / FOLDER / "metrics.json").is_file()


def summary(cfg: Config, run_dir: Path, base_model: str) -> dict:
    """What the classifier's metrics.json and report say about the masked-LM phase."""
    folder = run_dir / FOLDER
    metrics = json.loads((folder / "metrics.json").read_text())
    before, after = metrics["before"], metrics["validation"]
    return {"base_model": base_model, "model": str(folder / "model"), "epochs": cfg.pretrain.epochs,
            "extra_text": str(cfg.pretrain.extra_text) if cfg.pretrain.extra_text else None,
            "perplexity_before": before["perplexity"], "perplexity_after": after["perplexity"],
            "seconds": metrics.get("timing", {}).get("wall_seconds"), "run_folder": str(folder)}
