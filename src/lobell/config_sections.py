"""The config's sections (data, optimizer, scheduler, ..., checkpoint): each key, its default and why.

`config.py` assembles them into `Config` and loads YAML and overrides; every name here is also
importable from `lobell.config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from lobell.errors import nearest
from lobell.registry import TASKS as _REGISTRY

TASKS = tuple(_REGISTRY)  # every task of the registry (registry.py); `task:` accepts exactly these
LOSSES = ("auto", "cross-entropy", "bce", "mse", "huber")
STRATEGIES = ("full", "feature-extraction", "gradual", "discriminative", "two-stage", "lora")


class _Section(BaseModel):
    """Base for every config section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads `true` as 1 for a number; `batch_size: true` is a mistake, not a batch of one.
        if isinstance(value, bool) and not _admits_bool(cls.model_fields[info.field_name].annotation):
            raise ValueError("expects a number or a name, not true/false")
        return value


def _admits_bool(annotation: Any) -> bool:
    """Whether a field's type takes true/false: bool itself, or a union/optional/Annotated holding it."""
    if annotation is bool or annotation is Any:
        return True
    return any(_admits_bool(arg) for arg in get_args(annotation) if not isinstance(arg, (str, int, float)) or arg is bool)


class DataConfig(_Section):
    train: Path | None = None  # csv, jsonl or parquet (image tasks: also a folder of class folders)
    validation: Path | None = None  # optional: otherwise a stratified split of train
    test: Path | None = None  # optional: evaluated with the best model at the end
    text_column: str = "text"
    label_column: str = "label"
    # 10% is the usual hold-out for fine-tuning sets of a few thousand examples.
    val_fraction: float = Field(0.1, gt=0, lt=1)
    # None: the model's own limit (tokenizer.model_max_length, capped at 512).
    max_length: int | None = Field(None, ge=8)
    # Sort within large random buckets so batches hold texts of similar length: less padding.
    group_by_length: bool = True
    max_train_samples: int | None = Field(None, ge=1)  # a quick subset, taken after shuffling
    max_eval_samples: int | None = Field(None, ge=1)
    num_workers: int = Field(0, ge=0)  # tokenised text needs no workers; images do
    # Image tasks: the column of a CSV/JSONL that holds image paths (relative to that file).
    image_column: str = "image"
    # None: the model's own pretrained input size (timm's pretrained_cfg, torchvision's weights
    # meta). Smaller sizes train much faster on a CPU (64 px is ~10x cheaper than 224 px).
    image_size: int | None = Field(None, ge=16, le=1024)
    # False: an unreadable, corrupt or empty image stops the run with one error naming the file,
    # since silently training on less data hides broken datasets; True skips and counts them.
    skip_bad_images: bool = False
    # Audio tasks: the column of a CSV/JSONL that holds WAV/FLAC paths (relative to that file); the
    # label column holds the class (audio-classification) or the transcript (speech-recognition).
    audio_column: str = "audio"
    # audio-classification: clips are cut to their first N seconds (None: whole clips). Attention
    # cost grows with the square of the length; keyword-spotting clips are ~1 s.
    max_seconds: float | None = Field(None, gt=0)
    # seq2seq and causal-lm (docs/generation.md). seq2seq: the input and output text columns; T5 was
    # pre-trained with a task prefix ("translate English to German: "), which `source_prefix` adds.
    source_column: str = "source"
    target_column: str = "target"
    source_prefix: str = ""
    # causal-lm: a `messages` column (chat, through the tokenizer's chat template) wins over
    # prompt/completion columns, which win over plain text in data.text_column.
    prompt_column: str = "prompt"
    completion_column: str = "completion"
    messages_column: str = "messages"
    # The loss on completions and assistant turns only (prompts are given, not learnt); false: every token.
    completion_only_loss: bool = True
    # causal-lm training: whole examples packed into rows of data.max_length tokens, each attending only
    # to itself (position ids restart per example), where the model's attention reads packed positions.
    packing: bool = True
    # masked-lm (docs/masked-lm.md): the share of tokens masked in each batch, afresh every epoch
    # (BERT's 15%), and whether every piece of a chosen word is masked together (whole-word masking).
    mlm_probability: float = Field(0.15, gt=0, lt=1)
    whole_word_mask: bool = False


class GenerationConfig(_Section):
    """Decoding for evaluation and `lobell predict` (seq2seq, causal-lm); saved as the model's generation_config.json."""

    # Always passed explicitly: transformers' own default stops at 20 tokens (max_length=20).
    max_new_tokens: int = Field(64, ge=1)
    num_beams: int = Field(1, ge=1)  # 1: greedy, deterministic and cheapest; 4-5 is the usual beam search
    do_sample: bool = False  # evaluation should not depend on luck
    temperature: float = Field(1.0, gt=0)  # do_sample only
    top_p: float = Field(1.0, gt=0, le=1)  # do_sample only
    repetition_penalty: float = Field(1.0, gt=0)
    no_repeat_ngram_size: int = Field(0, ge=0)
    length_penalty: float = 1.0  # beam search: > 1 favours longer outputs

    def settings(self) -> dict:
        """Keyword arguments of `generate()`: the sampling ones only when sampling."""
        values = self.model_dump()
        if not self.do_sample:
            values.pop("temperature"), values.pop("top_p")
        if self.num_beams == 1:
            values.pop("length_penalty")
        return values


class OptimizerConfig(_Section):
    name: Literal["adamw", "adam", "sgd", "rmsprop"] = "adamw"
    # The head's LR; pre-trained groups get lr x their group scale (see strategy). `auto`: a
    # few-dozen-step LR probe on the first stage picks it (docs/recipe.md; model left as it was).
    lr: Annotated[float, Field(gt=0, lt=10)] | Literal["auto"] = 5e-5
    weight_decay: float = Field(0.01, ge=0)  # BERT's value; never applied to biases and norms
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd and rmsprop only
    nesterov: bool = False  # sgd only

    @field_validator("lr", mode="before")
    @classmethod
    def _number_or_auto(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip() != "auto":
            try:
                return float(value)
            except ValueError:
                raise ValueError("expects a number such as 3e-5, or auto (a short LR probe picks it)") from None
        return value.strip() if isinstance(value, str) else value


class SchedulerConfig(_Section):
    name: Literal["constant", "linear", "cosine", "step", "one-cycle", "plateau"] = "linear"
    warmup_ratio: float = Field(0.1, ge=0, lt=1)  # BERT's 10% warmup keeps early steps gentle
    step_epochs: int = Field(1, ge=1)  # step: multiply the LR by `gamma` every this many epochs
    gamma: float = Field(0.1, gt=0, lt=1)  # step and plateau: the factor (ResNet's classic 0.1)
    patience: int = Field(1, ge=0)  # plateau: epochs without improvement before the LR drops


class EarlyStoppingConfig(_Section):
    patience: int | None = Field(2, ge=1)  # None: never stop early
    monitor: str = "accuracy"  # any metric name; losses and errors are minimised
    min_delta: float = Field(0.0, ge=0)


class StrategyConfig(_Section):
    name: Literal["full", "feature-extraction", "gradual", "discriminative", "two-stage", "lora"] = "full"
    # full/gradual: pre-trained groups train at lr x this (0.4 x 5e-5 = 2e-5, BERT's usual best).
    backbone_lr_scale: float = Field(0.4, gt=0, le=1)
    # discriminative: group LR = head LR x lr_decay ** (distance from the head); combinable.
    lr_decay: float | None = Field(None, gt=0, le=1)
    unfreeze_every: int = Field(1, ge=1)  # gradual: epochs between unfreezing one more group
    max_groups: int | None = Field(None, ge=1)  # gradual: stop unfreezing at this many groups
    frozen_epochs: int = Field(1, ge=1)  # two-stage: head-only epochs first
    unfrozen_lr_factor: float = Field(0.5, gt=0, le=1)  # two-stage: all LRs x this afterwards
    train_bn: bool = False  # frozen batch-norm layers keep their running statistics
    # Audio: the CNN feature encoder (wav2vec2/HuBERT) stays frozen in every stage, as the wav2vec2
    # paper and transformers' examples fine-tune; true makes it a group like any other.
    train_feature_encoder: bool = False


class LoraConfig(_Section):
    """strategy=lora (docs/lora-and-distillation.md): low-rank adapters through peft; the head trains in full."""

    r: int = Field(8, ge=1)  # the LoRA paper's 4-8 already match full fine-tuning on GLUE-sized tasks
    alpha: float = Field(16, gt=0)  # updates scale by alpha / r; 2 x r is the usual pairing
    dropout: float = Field(0.1, ge=0, lt=1)  # on the adapters' input: peft's examples for BERT-sized encoders
    # None: per family (BERT-like query,value from peft's table; a ViT's qkv; else every linear layer).
    # Layer names, matched like peft does (the name or a `.name` suffix); convolutions are refused.
    target_modules: list[str] | None = None
    # true: model/ holds plain merged weights (plain transformers loads it); false: a peft adapter folder
    # that names its base model (smaller; lobell predict and peft.PeftModel.from_pretrained load it).
    merge: bool = True


class DistillConfig(_Section):
    """Knowledge distillation (Hinton et al. 2015): the student also matches a fine-tuned teacher's outputs."""

    teacher: str  # a finished lobell run folder, its model/ folder, or (text) a fine-tuned classifier's name
    temperature: float = Field(2.0, gt=0)  # DistilBERT's T=2: softens the teacher without flattening it
    alpha: float = Field(0.5, ge=0, le=1)  # weight of the teacher's soft targets; 1 - alpha on the labels
    # Afterwards, train the same student on the same budget without the teacher and warn when the
    # teacher did not help (distillation.json "control"); costs one more student training. Skipped
    # under a time_budget (the budget is all the time the run has).
    control: bool = True


class PretrainConfig(_Section):
    """Masked-LM continued pre-training on the training texts (plus `extra_text`) before the classifier
    trains from the adapted encoder (ULMFiT's and Gururangan et al. 2020's domain-adaptive step)."""

    extra_text: Path | None = None  # more unlabeled in-domain text: a .txt file (one per line) or a table
    epochs: int = Field(1, ge=1)  # passes over the texts; a few are usual for small in-domain sets
    lr: float = Field(5e-5, gt=0, lt=1)  # every layer at one LR: BERT's pre-training-scale fine-tuning rate
    batch_size: int | None = Field(None, ge=1)  # None: the classifier's batch_size
    mlm_probability: float = Field(0.15, gt=0, lt=1)  # BERT's 15%
    whole_word_mask: bool = False
    val_fraction: float = Field(0.05, gt=0, lt=1)  # texts held back to measure perplexity before and after


class LossConfig(_Section):
    # auto: cross-entropy (classification), bce (multi-label), mse (regression); or an importable
    # `package.module:function` taking (logits, targets) and returning a scalar tensor.
    name: str = "auto"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    class_weights: Literal["none", "auto"] = "none"
    l1: float = Field(0.0, ge=0)  # L1 penalty x sum |w| over trainable weights (L2 is weight_decay)

    @model_validator(mode="after")
    def _known_or_importable(self) -> LossConfig:
        if self.name not in LOSSES and ":" not in self.name:
            raise ValueError(f"loss.name must be one of {', '.join(LOSSES)} or package.module:function"
                             f"{nearest(self.name, LOSSES)}")
        return self


class HeadConfig(_Section):
    """New layers between the backbone's pooled features and the output (the L of LO-BELL)."""

    # One 512-wide hidden layer, as in the source notes' `Dense(512, activation='relu')`.
    hidden: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [512])
    # 0.2: MobileNetV2's and EfficientNet-B0's own classifier dropout.
    dropout: float = Field(0.2, ge=0, lt=1)
    batch_norm: bool = True  # normalises the new layer's inputs, so a fresh head trains stably at a high LR
    activation: Literal["relu", "gelu", "silu", "tanh"] = "relu"


class TaskHeadConfig(_Section):
    """One head of a multi-task model (docs/multi-task.md): the column it learns and how."""

    # Prefixes its metrics (`sentiment/accuracy`) and prediction columns; names its head's weights.
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    label_column: str | None = None  # None: the column named like the task
    kind: Literal["classification", "multi-label", "regression"] = "classification"
    # Its loss x this in the weighted sum the model trains on; 1.0 each: every task counts the same.
    loss_weight: float = Field(1.0, ge=0)

    @property
    def column(self) -> str:
        return self.label_column or self.name


class MixupConfig(_Section):
    """Mixup / CutMix on training batches (timm's names); both alphas 0 = off."""

    # Off by default: they help long runs on small data sets but slow the first epochs' progress.
    mixup_alpha: float = Field(0.0, ge=0)  # timm's recipes use 0.2-0.8
    cutmix_alpha: float = Field(0.0, ge=0)  # timm's recipes use 1.0
    prob: float = Field(1.0, ge=0, le=1)  # chance that a batch is mixed at all
    switch_prob: float = Field(0.5, ge=0, le=1)  # with both alphas set: chance of CutMix over Mixup


class SpeedConfig(_Section):
    """Speed levers, each on where it is safe (docs/benchmarks.md measures them)."""

    # While only the head trains (feature-extraction; the first stage of two-stage and gradual),
    # run the frozen backbone once per example and train the head on the stored features. Off by
    # itself where inputs change every epoch (image augment other than none, mixup).
    cache_features: bool = True
    # None: the features live in memory for the run; a folder: also saved there, named by a key of
    # model, weights, data and preprocessing, so later runs on the same inputs reuse them.
    feature_cache_dir: Path | None = None
    # CNN weights in channels-last memory order. auto: on CUDA and CPUs, where it speeds convolutions
    # (bench/channels_last.py: 1.2-1.4x on 2 CPU cores); transformers are never changed.
    channels_last: Literal["auto", "on", "off"] = "auto"
    # One fused kernel per optimizer step (AdamW, Adam, SGD) instead of one op per tensor: the same
    # update, about 7x cheaper for AdamW over MiniLM's 23M parameters on 2 CPU cores.
    fused_optimizer: bool = True


class CheckpointConfig(_Section):
    # Every epoch always checkpoints; also every N optimizer steps when set (long epochs).
    every_steps: int | None = Field(None, ge=1)
    keep: int = Field(2, ge=1)  # the newest N step checkpoints stay, plus the best weights
    # SIGUSR1 (e.g. SLURM's --signal=USR1@120): a checkpoint at the next step, and training goes on.
    # Off by default, since without a handler SIGUSR1 ends a process, which is what other tools expect.
    on_sigusr1: bool = False
