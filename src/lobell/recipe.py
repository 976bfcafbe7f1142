"""The LO-BELL recipe: a sound default for each of the six choices, decided from the model and the
data, with the reason; anything the user set wins and is shown as theirs.

Starting points from the source notes, refined by what we measured (docs/recipe.md): text encoders
AdamW, batch 16-32, 2-4 epochs; vision SGD momentum 0.9 or AdamW 1e-4..1e-3, batch 64, 5-10
epochs; small data favours feature extraction or gradual unfreezing; imbalance, class weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lobell.config import Config, with_overrides
from lobell.registry import TASKS

# Training-set sizes where the strategy changes: below SMALL, too little data to move millions of
# pre-trained weights without over-fitting; up to MEDIUM, unfreeze gradually from the top.
SMALL, MEDIUM = 300, 2000
# A class this many times rarer than the commonest one gets inverse-frequency loss weights.
IMBALANCE_RATIO = 3.0


@dataclass
class Profile:
    """What the recipe looks at: model family and size, modality, data size and shape."""

    modality: str
    problem: str
    family: str  # "encoder" (transformers), "cnn", "vit"
    params: int
    n_train: int
    n_classes: int | None = None
    imbalance: float = 1.0  # commonest / rarest class count
    median_length: float | None = None  # tokens (text)
    image_size: int | None = None


@dataclass
class Choice:
    letter: str  # L, O, B, E, L, L
    name: str
    values: dict[str, Any]  # dotted config key -> value
    reason: str
    keys: list[str] = field(default_factory=list)  # the keys that set it
    source: str = "lobell"  # or "yours"


def profile_of(cfg: Config, splits, adapter) -> Profile:
    modality, problem = TASKS[cfg.task]
    problem = "multi-task" if cfg.tasks is not None else problem
    params = sum(p.numel() for p in adapter.model.parameters())
    family = "encoder" if modality in ("text", "audio", "speech") else ("vit" if "vit" in cfg.model.lower() else "cnn")
    prof = Profile(modality, problem, family, params, len(splits.train))
    if problem == "classification":
        counts = np.bincount(splits.train.targets, minlength=len(splits.labels))
        prof.n_classes = len(splits.labels)
        prof.imbalance = float(counts.max() / max(counts.min(), 1))
    elif problem == "multi-label":
        prof.n_classes = len(splits.labels)
    if modality == "text" and hasattr(adapter, "tokenizer"):
        sample = splits.train.inputs[:2000]
        prof.median_length = float(np.median([len(ids) for ids in adapter.tokenizer(sample)["input_ids"]]))
    if modality == "image":
        prof.image_size = cfg.data.image_size
    return prof


# Head-only text epochs on cached features (see _epochs): a few dozen update steps are not enough
# for a fresh head on a few hundred examples; with the cache, 15 epochs cost ~2 uncached ones.
CACHED_HEAD_EPOCHS = 15


def decide(cfg: Config, prof: Profile) -> list[Choice]:
    """The six choices for this model and data; each names its keys and says why."""
    # A learning rate you chose was chosen for the default optimizer (AdamW): keep that optimizer.
    keep_adamw = _is_set(cfg, "optimizer.lr") and cfg.optimizer.lr != "auto" and not _is_set(cfg, "optimizer.name")
    layers, optimizer = _layers(prof), _optimizer(prof, keep_adamw)
    # The strategy and optimizer that will run (yours where set) decide the epochs and the LR.
    strategy = _get(cfg, "strategy.name") if _is_set(cfg, "strategy.name") else layers.values["strategy.name"]
    optimizer_name = _get(cfg, "optimizer.name") if _is_set(cfg, "optimizer.name") else optimizer.values["optimizer.name"]
    choices = [layers, optimizer, _batch(prof), _epochs(prof, strategy, cfg.speed.cache_features), _loss(prof),
               _learning_rate(prof, strategy, optimizer_name)]
    for choice in choices:
        choice.keys = list(choice.values)
        user = {k: _get(cfg, k) for k in choice.values if _is_set(cfg, k)}
        if user:
            choice.values.update(user)
            choice.source = "yours" if len(user) == len(choice.values) else "yours + lobell"
            choice.reason = f"you set {', '.join(f'{k}={v}' for k, v in user.items())}" + (
                f"; lobell: {choice.reason}" if len(user) < len(choice.values) else "")
    return choices


def apply(cfg: Config, choices: list[Choice]) -> Config:
    """`cfg` with the recipe's values for every key the user did not set."""
    return with_overrides(cfg, {key: value for choice in choices for key, value in choice.values.items()}, "recipe")


def as_json(choices: list[Choice], prof: Profile) -> dict:
    return {"profile": asdict(prof), "choices": [asdict(c) for c in choices]}


def describe(choices: list[Choice], prof: Profile) -> str:
    size = f"{prof.params / 1e6:.1f}M-parameter {prof.family}"
    lines = [f"{size}, {prof.modality} {prof.problem}, {prof.n_train} training examples"
             + (f", {prof.n_classes} classes (imbalance {prof.imbalance:.1f}x)" if prof.n_classes else "")
             + (f", median {prof.median_length:.0f} tokens" if prof.median_length else "")]
    for c in choices:
        values = ", ".join(f"{k}={v}" for k, v in c.values.items())
        lines.append(f"{c.letter}  {c.name:<14} {values}\n   {'':<14} [{c.source}] {c.reason}")
    return "\n".join(lines)


def _layers(p: Profile) -> Choice:
    if p.problem == "ctc":
        return Choice("L", "Layers", {"strategy.name": "full"},
                      "CTC fine-tuning trains every transformer block even on minutes of speech (wav2vec2 paper); "
                      "the CNN feature encoder stays frozen (strategy.train_feature_encoder)")
    if p.problem == "detection":
        return Choice("L", "Layers", {"strategy.name": "full"},
                      "a detector's neck and heads are new and large, and boxes need the backbone's features to "
                      "adapt: every group trains except the stem (torchvision's own fine-tuning keeps its first "
                      "layers frozen), pre-trained groups at a lower LR")
    if p.n_train < SMALL:
        return Choice("L", "Layers", {"strategy.name": "feature-extraction"},
                      f"{p.n_train} examples (< {SMALL}) are too few to move {p.params / 1e6:.0f}M pre-trained weights "
                      f"without over-fitting: train only the new head")
    if p.n_train < MEDIUM:
        return Choice("L", "Layers", {"strategy.name": "gradual"},
                      f"{p.n_train} examples (< {MEDIUM}): unfreeze from the top one group per epoch, keeping the "
                      f"general low-level features while the head settles")
    return Choice("L", "Layers", {"strategy.name": "full"},
                  f"{p.n_train} examples are enough to fine-tune every layer, pre-trained ones at a lower LR")


def _optimizer(p: Profile, keep_adamw: bool = False) -> Choice:
    if p.family == "cnn" and keep_adamw:
        return Choice("O", "Optimizer", {"optimizer.name": "adamw", "optimizer.weight_decay": 0.01},
                      "you set optimizer.lr for the default optimizer, so AdamW stays (the recipe's CNN choice, SGD, "
                      "needs a ~10x larger LR)")
    if p.family == "cnn":
        return Choice("O", "Optimizer", {"optimizer.name": "sgd", "optimizer.momentum": 0.9,
                                         "optimizer.nesterov": True, "optimizer.weight_decay": 1e-4},
                      "CNNs fine-tune well with SGD + Nesterov momentum 0.9 and weight decay 1e-4 (the ResNet recipe)")
    return Choice("O", "Optimizer", {"optimizer.name": "adamw", "optimizer.weight_decay": 0.01},
                  f"transformer {'encoders' if p.modality == 'text' else 'backbones'} are trained with AdamW; "
                  f"weight decay 0.01 as in BERT, never on biases and norms")


def decide_batch(p: Profile) -> int:
    """The recipe's batch size: the effective batch `batch_size: auto` keeps."""
    return _batch(p).values["batch_size"]


def _batch(p: Profile) -> Choice:
    if p.modality in ("audio", "speech"):
        return Choice("B", "Batch size", {"batch_size": 16},
                      "16 clips: audio is long (50 frames a second); set batch_size=auto to fill a GPU")
    if p.problem == "detection":
        return Choice("B", "Batch size", {"batch_size": 8},
                      "8 images: torchvision's detection reference trains 2 images per GPU on 8 GPUs (16), and "
                      "detection images are large; set batch_size to what fits")
    if p.modality == "text":
        size = 16 if p.n_train < MEDIUM else 32
        why = f"{p.n_train} examples: 16 gives more update steps" if size == 16 else "32, the top of BERT's 16-32"
        return Choice("B", "Batch size", {"batch_size": size}, why)
    return Choice("B", "Batch size", {"batch_size": 64},
                  "64, the low end of vision's 64-256: fits a CPU or small GPU; set batch_size=auto to fill memory")


def _epochs(p: Profile, strategy: str = "full", cached: bool = True) -> Choice:
    if p.problem == "ctc":
        epochs = 30 if p.n_train < 5000 else 10
        return Choice("E", "Epochs", {"epochs": epochs, "early_stopping.patience": 5},
                      f"CTC learns slowly (transformers' examples: 30 epochs); {p.n_train} clips -> {epochs}. It first "
                      f"emits only blanks, so WER stays at 1.0 for a few epochs: patience 5")
    if p.modality == "audio":
        epochs = 10 if p.n_train < 1000 else 5
        return Choice("E", "Epochs", {"epochs": epochs},
                      f"audio encoders fine-tune in 5-10 epochs; {p.n_train} clips -> {epochs} (early stopping "
                      f"guards)")
    if p.modality == "text" and strategy == "feature-extraction" and cached:
        return Choice("E", "Epochs", {"epochs": CACHED_HEAD_EPOCHS, "early_stopping.patience": 3},
                      f"only the head trains, on cached encoder features: after the first epoch each costs a few "
                      f"percent of a forward pass, so {CACHED_HEAD_EPOCHS} epochs give a fresh head enough steps on "
                      f"{p.n_train} examples (early stopping, patience 3, ends it sooner)")
    if p.modality == "text":
        epochs = 4 if p.n_train < MEDIUM else (2 if p.n_train >= 20000 else 3)
        return Choice("E", "Epochs", {"epochs": epochs},
                      f"BERT-like encoders need 2-4 epochs; {p.n_train} examples -> {epochs} (early stopping guards)")
    epochs = 10 if p.n_train < 1000 else (8 if p.n_train < 10000 else 5)
    return Choice("E", "Epochs", {"epochs": epochs},
                  f"vision fine-tunes take 5-10 epochs; {p.n_train} examples -> {epochs} (early stopping guards)")


def _loss(p: Profile) -> Choice:
    if p.problem == "multi-task":
        return Choice("L", "Loss", {"loss.name": "auto"}, "one loss per task head by its kind (cross-entropy, BCE, "
                      "MSE), weighted by tasks[].loss_weight")
    if p.problem == "ctc":
        return Choice("L", "Loss", {"loss.name": "auto"}, "transcripts: CTC over the audio frames (auto = ctc)")
    if p.problem == "detection":
        return Choice("L", "Loss", {"loss.name": "auto"}, "the detector's own losses, summed: classification and box "
                      "regression (Faster R-CNN adds the RPN's objectness and boxes; FCOS centre-ness)")
    if p.problem == "multi-label":
        return Choice("L", "Loss", {"loss.name": "bce"}, "several labels per example: binary cross-entropy per label")
    if p.problem == "regression":
        return Choice("L", "Loss", {"loss.name": "mse"}, "a numeric target: mean squared error")
    if p.imbalance >= IMBALANCE_RATIO:
        return Choice("L", "Loss", {"loss.name": "cross-entropy", "loss.class_weights": "auto"},
                      f"the commonest class is {p.imbalance:.1f}x the rarest (>= {IMBALANCE_RATIO:.0f}x): "
                      f"cross-entropy with inverse-frequency class weights")
    return Choice("L", "Loss", {"loss.name": "cross-entropy", "loss.class_weights": "none"},
                  f"one class per example, classes balanced within {p.imbalance:.1f}x: plain cross-entropy")


def _learning_rate(p: Profile, strategy: str, optimizer: str) -> Choice:
    """The head's LR; pre-trained groups get it x strategy.backbone_lr_scale."""
    if strategy == "feature-extraction":
        lr = 1e-2 if optimizer == "sgd" else 1e-3
        return Choice("L", "Learning rate", {"optimizer.lr": lr},
                      f"only a new head trains: a high LR ({lr:g}) is safe", )
    if p.modality in ("audio", "speech"):
        body, scale = (1e-4, 1.0) if p.problem == "ctc" else (3e-5, 0.3)
        why = ("wav2vec2-style CTC fine-tuning: 1e-4 for the whole model, the feature encoder frozen" if scale == 1.0
               else "wav2vec2/HuBERT/AST classifiers: pre-trained layers at 3e-5, the new head at 1e-4")
        return Choice("L", "Learning rate", {"optimizer.lr": round(body / scale, 8),
                                             "strategy.backbone_lr_scale": scale, "scheduler.name": "linear",
                                             "scheduler.warmup_ratio": 0.1}, why)
    if p.modality == "text":
        body = 1e-4 if p.params < 50e6 else (3e-5 if p.params < 200e6 else 1e-5)
        scale = 0.4
        why = (f"a {p.params / 1e6:.0f}M-parameter encoder: pre-trained layers at {body:g} "
               f"({'small models take higher LRs, measured on MiniLM' if body == 1e-4 else 'BERT range 1e-5..5e-5'}), "
               f"the new head at {body / scale:.2g}")
    else:
        body = 1e-3 if optimizer == "sgd" else 1e-4
        scale = 0.1
        why = f"pre-trained {p.family} layers at {body:g}, the new head 10x higher, as the vision notes advise"
    return Choice("L", "Learning rate", {"optimizer.lr": round(body / scale, 8), "strategy.backbone_lr_scale": scale,
                                         "scheduler.name": "linear" if p.modality == "text" else "cosine",
                                         "scheduler.warmup_ratio": 0.1 if p.modality == "text" else 0.05}, why)


def _is_set(cfg: Config, dotted: str) -> bool:
    node = cfg
    *parents, last = dotted.split(".")
    for part in parents:
        if part not in node.model_fields_set:
            return False
        node = getattr(node, part)
    return last in node.model_fields_set


def _get(cfg: Config, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node
