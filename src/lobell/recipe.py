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
# A user budget of this many epochs or fewer is short: staged plans cannot run all their stages and
# augmentation (a new view of each example per pass) has no second pass to pay off in.
SHORT_EPOCHS = 2
# Linear-probe gain (domain_probe.py: 0 = the frozen features are no better than the majority class,
# 1 = they separate the classes) below which the data counts as far from the pre-training domain.
FAR_GAIN = 0.85
# strategy=lora, text: the adapters' (and the head's) LR.
LORA_LR = 1e-3


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
    # The linear probe of the frozen features before training (domain_probe.py); None where not run.
    probe: dict | None = None


@dataclass
class Choice:
    letter: str  # L, O, B, E, L, L
    name: str
    values: dict[str, Any]  # dotted config key -> value
    reason: str
    keys: list[str] = field(default_factory=list)  # the keys that set it
    source: str = "lobell"  # or "yours"


def profile_of(cfg: Config, splits, adapter, probe: bool = False) -> Profile:
    """What the recipe looks at; `probe=True` also measures the domain distance (needs loaded weights)."""
    modality, problem = TASKS[cfg.task]
    problem = "multi-task" if cfg.tasks is not None else problem
    params = sum(p.numel() for p in adapter.model.parameters())
    family = getattr(adapter, "family", None) or (  # generators name their own (models/generation.py)
        "encoder" if modality in ("text", "masked-text", "audio", "speech") else ("vit" if "vit" in cfg.model.lower()
                                                                                  else "cnn"))
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
    if probe and family == "cnn":  # the only family whose LRs depend on it: elsewhere it would cost a pass for nothing
        from lobell.domain_probe import linear_probe

        found = linear_probe(cfg, splits, adapter)
        prof.probe = asdict(found) if found is not None else None
    return prof


# Head-only text epochs on cached features (see _epochs): a few dozen update steps are not enough
# for a fresh head on a few hundred examples; with the cache, 15 epochs cost ~2 uncached ones.
CACHED_HEAD_EPOCHS = 15


def decide(cfg: Config, prof: Profile) -> list[Choice]:
    """The six choices for this model and data; each names its keys and says why."""
    # A learning rate you chose was chosen for the default optimizer (AdamW): keep that optimizer.
    keep_adamw = _is_set(cfg, "optimizer.lr") and cfg.optimizer.lr != "auto" and not _is_set(cfg, "optimizer.name")
    budget = budget_of(cfg)
    layers, optimizer = _layers(prof, budget), _optimizer(prof, keep_adamw)
    # The strategy and optimizer that will run (yours where set) decide the epochs and the LR.
    strategy = _get(cfg, "strategy.name") if _is_set(cfg, "strategy.name") else layers.values["strategy.name"]
    optimizer_name = _get(cfg, "optimizer.name") if _is_set(cfg, "optimizer.name") else optimizer.values["optimizer.name"]
    choices = [layers, optimizer, _batch(prof, budget), _epochs(prof, strategy, cfg.speed.cache_features, budget), _loss(prof),
               _learning_rate(prof, strategy, optimizer_name, budget)]
    if prof.family in ("encoder-decoder", "decoder"):  # text generators: their own six (recipe_generation.py)
        from lobell import recipe_generation

        choices = [Choice(**asdict(c)) for c in recipe_generation.decide(prof, budget)]
    for choice in choices:
        choice.keys = list(choice.values)
        user = {k: _get(cfg, k) for k in choice.values if _is_set(cfg, k)}
        if user:
            choice.values.update(user)
            choice.source = "yours" if len(user) == len(choice.values) else "yours + lobell"
            choice.reason = f"you set {', '.join(f'{k}={v}' for k, v in user.items())}" + (
                f"; lobell: {choice.reason}" if len(user) < len(choice.values) else "")
    return choices


@dataclass
class Budget:
    """What the user allowed: `epochs` they set (None: the recipe picks), and whether a time budget caps it."""

    epochs: int | None = None
    timed: bool = False

    @property
    def short(self) -> bool:
        """One or two passes over the data (or a clock): too few for staged plans or for augmentation to pay."""
        return self.timed or (self.epochs is not None and self.epochs <= SHORT_EPOCHS)

    def describe(self) -> str:
        return "a time budget" if self.timed else f"epochs={self.epochs}"


def budget_of(cfg: Config) -> Budget:
    timed = "time_budget" in type(cfg).model_fields and getattr(cfg, "time_budget", None) is not None
    return Budget(_get(cfg, "epochs") if _is_set(cfg, "epochs") else None, timed)


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
    if prof.probe:
        far = prof.probe["gain"] < FAR_GAIN
        lines.append(f"domain: a linear probe on the frozen features of {prof.probe['examples']} training examples "
                     f"scores {prof.probe['accuracy']:.2f} (majority {prof.probe['majority']:.2f}, gain "
                     f"{prof.probe['gain']:.2f}): {'far from' if far else 'close to'} the pre-training data"
                     + ("; CNN backbones then train at the head's LR" if far and prof.family == "cnn" else
                        "; the LRs do not depend on it for this model family" if prof.family != "cnn" else ""))
    for c in choices:
        values = ", ".join(f"{k}={v}" for k, v in c.values.items())
        lines.append(f"{c.letter}  {c.name:<14} {values}\n   {'':<14} [{c.source}] {c.reason}")
    return "\n".join(lines)


def _layers(p: Profile, budget: Budget | None = None) -> Choice:
    budget = budget or Budget()
    if p.problem == "ctc":
        return Choice("L", "Layers", {"strategy.name": "full"},
                      "CTC fine-tuning trains every transformer block even on minutes of speech (wav2vec2 paper); "
                      "the CNN feature encoder stays frozen (strategy.train_feature_encoder)")
    if p.problem == "detection":
        return Choice("L", "Layers", {"strategy.name": "full"},
                      "a detector's neck and heads are new and large, and boxes need the backbone's features to "
                      "adapt: every group trains except the stem (torchvision's own fine-tuning keeps its first "
                      "layers frozen), pre-trained groups at a lower LR")
    # docs/benchmarks.md, recipe suite, rows rt-tiny-200 / fashion-mnist-tiny-200 / digits-64px at epochs=1:
    # a head-only or gradual plan spends the only pass on the head (main's recipe: 0.32 on digits vs
    # the plain loop's all-layer 0.91); every stage of the plan must fit in the budget.
    if budget.short:
        return Choice("L", "Layers", {"strategy.name": "full"},
                      f"you allowed {budget.describe()}: too few passes for a staged plan (head first, then "
                      f"unfreezing) to reach the backbone, so every layer trains from the first step, after a short "
                      f"warm-up")
    if _far(p) and p.family == "cnn":
        # docs/benchmarks.md, recipe suite, digits-64px at the recipe's 8 epochs: gradual 0.828, every
        # layer 0.992 (the plain loop on every layer: 0.988).
        return Choice("L", "Layers", {"strategy.name": "full"},
                      f"the frozen features are far from this data (linear probe gain {p.probe['gain']:.2f} < "
                      f"{FAR_GAIN}): a staged plan would keep the lower layers ImageNet's for most epochs, so every "
                      f"layer trains from the first step")
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
        # docs/benchmarks.md, recipe suite, digits-64px at epochs=1: clipping the gradient norm at 1.0 (a
        # transformer habit) held SGD fine-tuning of MobileNetV2 at chance (0.11 test; 0.26 without it at
        # the same LR); torchvision's reference recipes do not clip.
        return Choice("O", "Optimizer", {"optimizer.name": "sgd", "optimizer.momentum": 0.9,
                                         "optimizer.nesterov": True, "optimizer.weight_decay": 1e-4,
                                         "max_grad_norm": None},
                      "CNNs fine-tune well with SGD + Nesterov momentum 0.9 and weight decay 1e-4 (the ResNet "
                      "recipe), without gradient clipping (it held MobileNetV2 at chance in one epoch)")
    return Choice("O", "Optimizer", {"optimizer.name": "adamw", "optimizer.weight_decay": 0.01},
                  f"transformer {'encoders' if p.modality == 'text' else 'backbones'} are trained with AdamW; "
                  f"weight decay 0.01 as in BERT, never on biases and norms")


def decide_batch(p: Profile) -> int:
    """The recipe's batch size: the effective batch `batch_size: auto` keeps."""
    return _batch(p).values["batch_size"]


# Short vision budgets: a batch that gives each epoch about this many update steps (see _batch).
SHORT_STEPS = 64


def _batch(p: Profile, budget: Budget | None = None) -> Choice:
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
    if budget is not None and budget.short:
        # docs/benchmarks.md, recipe suite, epochs=1 (MobileNetV2, SGD 3e-3): batch 64 / 32 / 16 gave
        # digits-64px 0.31 / 0.89 / 0.97 and fashion-mnist 0.52 / 0.73 / 0.78; fashion-mnist-tiny-200
        # batch 16 / 8: 0.34 / 0.42. One pass is all the updates there will be: buy steps, not throughput.
        size = int(min(64, max(8, 2 ** round(np.log2(max(p.n_train, 1) / SHORT_STEPS)))))
        return Choice("B", "Batch size", {"batch_size": size},
                      f"you allowed {budget.describe()}: {p.n_train} images in batches of {size} give "
                      f"~{-(-p.n_train // size)} update steps a pass (a larger batch runs faster but learns less "
                      f"in so few steps)")
    return Choice("B", "Batch size", {"batch_size": 64},
                  "64, the low end of vision's 64-256: fits a CPU or small GPU; set batch_size=auto to fill memory")


def _epochs(p: Profile, strategy: str = "full", cached: bool = True, budget: Budget | None = None) -> Choice:
    choice = _epoch_count(p, strategy, cached)
    if p.modality == "image" and budget is not None and budget.short:
        # docs/benchmarks.md, recipe suite, digits-64px and fashion-mnist at epochs=1: random crops of
        # 8x8 digits upscaled cut strokes away, and a single pass never sees the same image twice.
        choice.values["augment"] = "none"
        choice.reason += (f"; {budget.describe()}: no augmentation (each image is seen once, so random views "
                          f"only add noise; light augmentation pays over repeated passes)")
    elif p.modality == "image" and _far(p):
        # digits-64px, 8 epochs, every layer: light augmentation 0.962, none 0.992; fashion-mnist 0.816 / 0.820.
        choice.values["augment"] = "none"
        choice.reason += ("; no augmentation: the data is far from the pre-training photos (the domain probe), where "
                          "the photo habits of random crops and mirror flips are not known to keep the label (a "
                          "mirrored digit is another symbol); set augment=light where they do")
    return choice


def _epoch_count(p: Profile, strategy: str, cached: bool) -> Choice:
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
    if p.problem == "masked-lm":
        return Choice("L", "Loss", {"loss.name": "auto"}, "masked tokens: cross-entropy over them only (BERT's MLM loss)")
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


def _learning_rate(p: Profile, strategy: str, optimizer: str, budget: Budget | None = None) -> Choice:
    """The head's LR; pre-trained groups get it x strategy.backbone_lr_scale."""
    budget = budget or Budget()
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
    if strategy == "lora" and p.modality == "text":
        # docs/benchmarks.md, recipe suite, rows "lobell lora" (rt-imbalanced-5pct, rotten-tomatoes, epochs=1):
        # the adapters start at zero (B = 0) and are new weights; at the full fine-tuning head LR
        # (2.5e-4) one epoch left them barely moved.
        return Choice("L", "Learning rate", {"optimizer.lr": LORA_LR, "scheduler.name": "linear",
                                             "scheduler.warmup_ratio": 0.1},
                      f"LoRA adapters and the new head at {LORA_LR:g}: the adapters are new weights starting at "
                      f"zero and need a higher LR than pre-trained layers (the LoRA paper: 4e-4..5e-4 for "
                      f"RoBERTa-base; small encoders and short budgets take more)" + (
                          # rotten-tomatoes, epochs=1, MiniLM: LoRA 0.650 vs full fine-tuning 0.746 test accuracy.
                          f". Expect less than full fine-tuning at {budget.describe()}: on 1,000 Rotten Tomatoes "
                          f"reviews one LoRA epoch reached 0.65 test accuracy where full fine-tuning reached 0.75 "
                          f"(docs/benchmarks.md); LoRA saves memory, not epochs" if budget.short else ""))
    if p.modality == "text":
        body = 1e-4 if p.params < 50e6 else (3e-5 if p.params < 200e6 else 1e-5)
        scale = 0.4
        why = (f"a {p.params / 1e6:.0f}M-parameter encoder: pre-trained layers at {body:g} "
               f"({'small models take higher LRs, measured on MiniLM' if body == 1e-4 else 'BERT range 1e-5..5e-5'}), "
               f"the new head at {body / scale:.2g}")
    else:
        head = 1e-2 if optimizer == "sgd" else 1e-3
        scale, why = 0.1, f"pre-trained {p.family} layers at {head * 0.1:g}, the new head 10x higher, as the vision notes advise"
        far = _far(p)
        # docs/benchmarks.md, recipe suite, digits-64px and fashion-mnist (grey images, far from
        # ImageNet): the backbone at 0.1x the head's LR stays ImageNet's; the plain loop's SGD 0.01 on
        # every layer wins. Only CNNs were measured (no ViT weights offline).
        if p.family == "cnn" and (far or budget.short):
            # digits-64px at epochs=1, every layer trained, no clipping: SGD 1e-2 gave 0.26 test, 3e-3 gave
            # 0.906 (the plain loop's best of its 4-LR grid: 0.892 at 3e-3).
            head, scale = (3e-3 if optimizer == "sgd" else head), 1.0
            why = ("every layer at the head's LR " + f"{head:g}: " + "; ".join(filter(None, [
                f"the frozen features are far from this data (a linear probe on {p.probe['examples']} training "
                f"examples: {p.probe['accuracy']:.2f} accuracy vs {p.probe['majority']:.2f} majority, gain "
                f"{p.probe['gain']:.2f} < {FAR_GAIN}), so the backbone must move" if far else "",
                f"{budget.describe()} gives the backbone one short pass to adapt" if budget.short else ""])))
        body = head * scale
    return Choice("L", "Learning rate", {"optimizer.lr": round(body / scale, 8), "strategy.backbone_lr_scale": scale,
                                         "scheduler.name": "linear" if p.modality == "text" else "cosine",
                                         "scheduler.warmup_ratio": 0.1 if p.modality == "text" else 0.05}, why)


def _far(p: Profile) -> bool:
    """The domain probe ran and found the frozen features far from this data."""
    return p.probe is not None and p.probe["gain"] < FAR_GAIN


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
