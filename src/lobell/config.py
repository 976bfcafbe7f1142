"""Typed run configuration: every key, its default and why, in one place.

A config is YAML plus dotted `key=value` overrides. Unknown keys are errors that suggest the nearest
valid key; the resolved config (every default written out) is saved with each run.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from lobell.errors import LobellError, nearest
from lobell.train.budget import parse_duration

TASKS = (
    "text-classification",
    "text-multi-label",
    "text-regression",
    "image-classification",
    "image-multi-label",
    "image-regression",
    "audio-classification",
    "audio-multi-label",
    "audio-regression",
    "speech-recognition",
)
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


class Config(_Section):
    task: Literal[TASKS] = "text-classification"  # type: ignore[valid-type]
    model: str = "sentence-transformers/all-MiniLM-L6-v2"  # hub name or local directory
    data: DataConfig = DataConfig()
    strategy: StrategyConfig = StrategyConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    loss: LossConfig = LossConfig()
    # 16-32 is the BERT paper's range; `auto`: the largest batch that fits memory (up to the
    # recipe's), the rest made up by gradient accumulation.
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = 32
    grad_accum: int = Field(1, ge=1)  # optimizer step every N batches: effective batch = batch_size x N
    eval_batch_size: int | None = Field(None, ge=1)  # None: 2 x batch_size (no gradients kept)
    epochs: int = Field(3, ge=1)  # 2-4 for BERT-like encoders
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    max_grad_norm: float | None = Field(1.0, gt=0)  # clip over trainable parameters
    # auto: bf16 autocast where the CPU/GPU runs it fast, else fp32.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    seed: int = 0
    output_dir: Path | None = None  # None: runs/<task>-<timestamp>
    log_every: int = Field(20, ge=1)  # steps between progress-bar loss updates
    checkpoint: CheckpointConfig = CheckpointConfig()
    speed: SpeedConfig = SpeedConfig()
    # true: keys you leave unset get the LO-BELL recipe's values for this model and data (see
    # `lobell recipe`, docs/recipe.md); false: the fixed defaults written in this file.
    recipe: bool = True
    # Image models: None loads the pre-trained weights the model name stands for (a packaged copy,
    # the torch/HF cache, or a download); a path loads a local weights file or folder; `random`
    # trains from scratch (for baselines and tests, not for fine-tuning).
    model_weights: str | None = None
    # None: the backbone's own head shape with a new output layer; a section adds new layers.
    head: HeadConfig | None = None
    # Several heads on one backbone (docs/multi-task.md): one head per task, each with its own label
    # column, kind and loss weight; `task` then only picks the modality. None: one head, data.label_column.
    tasks: list[TaskHeadConfig] | None = None
    # Image training augmentation (docs/vision.md): light = random-resized crop (scale 0.5-1) and
    # horizontal flip, mild enough not to pull images far from what the backbone saw in
    # pre-training; none = the evaluation transform; strong adds TrivialAugment and random erasing.
    augment: Literal["none", "light", "strong"] = "light"
    mixup: MixupConfig = MixupConfig()
    # Metrics, group LRs and this config to TensorBoard (RUN_DIR/tensorboard) or MLflow through
    # Accelerate's trackers. Off by default: the run folder already holds every number, and each
    # tracker is an extra package (`pip install "lobell[tracking]"`).
    tracking: Literal["none", "tensorboard", "mlflow"] = "none"
    lora: LoraConfig = LoraConfig()  # used by strategy=lora only
    distill: DistillConfig | None = None  # None: no teacher; a section trains this model as a student
    # The whole run's wall time (90 = seconds, 30s, 10m, 2h; stored as seconds): epochs fit to it
    # from a few timed steps, and the run stops in time with its best model (docs/recipe.md).
    # Epochs stay a ceiling. None: no limit.
    time_budget: float | None = None

    @field_validator("time_budget", mode="before")
    @classmethod
    def _parse_time_budget(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)

    @model_validator(mode="after")
    def _check_consistency(self) -> Config:
        if self.strategy.name == "two-stage" and self.strategy.frozen_epochs >= self.epochs:
            raise ValueError(
                f"strategy.frozen_epochs={self.strategy.frozen_epochs} leaves no epoch for the "
                f"unfrozen stage of two-stage (epochs={self.epochs}); raise epochs or lower it"
            )
        return self

    @model_validator(mode="after")
    def _check_lora_and_distill(self) -> Config:
        changed = [k for k, v in self.lora.model_dump().items() if v != LoraConfig.model_fields[k].default]
        if changed and self.strategy.name != "lora":
            raise ValueError(f"lora.{changed[0]} applies to strategy=lora, not strategy={self.strategy.name}")
        if not self.lora.merge and not self.task.startswith("text-"):
            raise ValueError(f"lora.merge=false keeps adapters for text models only; task={self.task} merges them")
        if self.distill is not None and (self.mixup.mixup_alpha > 0 or self.mixup.cutmix_alpha > 0):
            raise ValueError("distill: the teacher's outputs are cached per image, which mixup/cutmix would not match; "
                             "turn mixup off")
        if self.distill is not None and self.tasks is not None:
            raise ValueError("distill: a multi-task student's outputs mix classes, labels and numbers of several heads, "
                             "which one soft loss cannot match; distil each task as a single-task run, or drop tasks:")
        return self

    @model_validator(mode="after")
    def _check_tasks(self) -> Config:
        if self.tasks is None:
            return self
        names = [task.name for task in self.tasks]
        if not names:
            raise ValueError("tasks is empty: list at least one {name, label_column, kind}, or remove it")
        repeated = next((name for name in names if names.count(name) > 1), None)
        if repeated:
            raise ValueError(f"tasks: the name {repeated!r} is used twice; each task needs its own name")
        if not any(task.loss_weight > 0 for task in self.tasks):
            raise ValueError("tasks: every loss_weight is 0, so nothing would train; give one task a weight > 0")
        single = {"loss.name": self.loss.name != "auto", "loss.class_weights": self.loss.class_weights != "none",
                  "mixup": self.mixup.mixup_alpha > 0 or self.mixup.cutmix_alpha > 0}
        used = [key for key, set_ in single.items() if set_]
        if used:
            raise ValueError(f"{used[0]} applies to single-task runs; with tasks each head's kind picks its loss")
        if "monitor" not in self.early_stopping.model_fields_set:
            self.early_stopping.monitor = "loss"  # the weighted sum: every task counts
        monitor = self.early_stopping.monitor
        known = ["loss"] + [f"{t.name}/{m}" for t in self.tasks for m in METRICS[t.kind]]
        if monitor not in known:
            raise ValueError(f"early_stopping.monitor={monitor!r} is not a metric of these tasks; use loss (the "
                             f"weighted sum) or TASK/METRIC such as {known[1]}{nearest(monitor, known)}")
        return self

    @model_validator(mode="after")
    def _check_monitor(self) -> Config:
        if self.tasks is not None:  # checked by _check_tasks
            return self
        # The default, accuracy, stands for rmse in regression and wer in speech recognition (the
        # runner's _monitor): saved configs hold it.
        problem = self.task.partition("-")[2]
        monitor, known = self.early_stopping.monitor, METRICS[problem]
        if monitor not in known and not (problem in ("regression", "recognition") and monitor == "accuracy"):
            raise ValueError(f"early_stopping.monitor={monitor!r} is not a metric of {self.task}; use one of "
                             f"{', '.join(known)}{nearest(monitor, known)}")
        return self

    @model_validator(mode="after")
    def _check_image_keys(self) -> Config:
        modality, _, problem = self.task.partition("-")
        mixing = self.mixup.mixup_alpha > 0 or self.mixup.cutmix_alpha > 0
        if modality != "image":
            image_only = {"model_weights": self.model_weights is not None, "augment": self.augment != "light",
                          "mixup": mixing, "data.image_size": self.data.image_size is not None}
            used = [key for key, set_ in image_only.items() if set_]
            if used:
                raise ValueError(f"{used[0]} applies to image tasks, not task={self.task}")
        audio = {"data.max_seconds": self.data.max_seconds is not None and modality != "audio",
                 "strategy.train_feature_encoder": self.strategy.train_feature_encoder and modality not in
                 ("audio", "speech"),
                 "head": self.head is not None and modality in ("audio", "speech")}
        used = [key for key, set_ in audio.items() if set_]
        if used:
            where = {"data.max_seconds": "audio tasks" + (" (a transcript cannot be cut with its clip)"
                                                                    if modality == "speech" else ""),
                     "strategy.train_feature_encoder": "audio tasks",
                     "head": "text and image tasks (audio models keep their own head shape)"}[used[0]]
            raise ValueError(f"{used[0]} applies to {where}, not task={self.task}")
        if mixing and problem == "regression":
            raise ValueError("mixup/cutmix mixes class labels: use it with image-classification or image-multi-label")
        if mixing and problem == "classification" and self.loss.name == "bce":
            raise ValueError("mixup/cutmix gives soft targets: use loss.name=cross-entropy (or auto) with it")
        return self

    def resolved_output_dir(self) -> Path:
        if self.output_dir is None:
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            candidate, n = Path("runs") / f"{self.task}-{stamp}", 1
            while candidate.exists():
                n += 1
                candidate = Path("runs") / f"{self.task}-{stamp}-{n}"
            self.output_dir = candidate
        return self.output_dir

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# The metrics each problem reports (lobell.evaluate.compute_metrics) besides the validation loss:
# the names early_stopping.monitor may take.
METRICS = {"classification": ("accuracy", "f1_macro", "loss"),
           "multi-label": ("accuracy", "f1_micro", "f1_macro", "loss"),
           "regression": ("rmse", "mae", "r2", "pearson", "loss"),
           "recognition": ("wer", "cer", "loss")}  # speech-recognition: word/character error rates

# Sections that accept a bare name as shorthand: `strategy: gradual` == `strategy: {name: gradual}`.
_SHORTHAND = ("strategy", "optimizer", "scheduler", "loss")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (optional) and apply `key=value` overrides, then validate.

    Raises:
        LobellError: the file is missing or not YAML, an override is malformed, or a key or
            value is invalid (the message names the key and suggests the nearest valid one).
    """
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(Path(path))
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LobellError(f"override '{item}' is not KEY=VALUE (e.g. optimizer.lr=3e-5)")
        _set_dotted(raw, key.strip(), _parse_value(value))
    return validate_config(raw, source=str(path) if path else "command line")


def _parse_value(value: str) -> Any:
    """An override's value as YAML reads it (3e-5, true, [256, 128]); text YAML cannot parse stays text,
    so the key's own check names it (`epochs='[1'` is invalid: ...) instead of a YAML traceback."""
    if not value.strip():
        return None
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def validate_config(raw: dict[str, Any], source: str = "config") -> Config:
    raw = _expand_shorthand(raw)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise LobellError(_explain(exc, source)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise LobellError(f"config file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise LobellError(f"config file '{path}' is not valid YAML: {exc}".splitlines()[0]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LobellError(f"config file '{path}' must hold a mapping of keys, not {type(data).__name__}")
    return data


def _expand_shorthand(raw: dict[str, Any]) -> dict[str, Any]:
    raw = dict(raw)
    for key in _SHORTHAND:
        if isinstance(raw.get(key), str):
            raw[key] = {"name": raw[key]}
    return raw


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str) and part in _SHORTHAND:
            child = {"name": child}
        if not isinstance(child, dict):
            child = {}
        node[part] = child
        node = child
    last = parts[-1]
    if len(parts) == 1 and last in _SHORTHAND and isinstance(node.get(last), dict) and isinstance(value, str):
        node[last]["name"] = value  # `strategy=gradual` keeps `strategy.unfreeze_every` from the file
    else:
        node[last] = value


def _section_fields(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = Config
    for part in loc:
        if isinstance(part, int):  # an item of a list of sections (`tasks.0.kind`)
            continue
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        # An optional section (`head: HeadConfig | None`) or a list of them suggests keys of the section itself.
        inner = [b for a in get_args(annotation) for b in (a, *get_args(a))]
        annotation = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            break
    return list(model.model_fields)


def _is_union_branch(part) -> bool:
    """pydantic names the branch of `int | Literal[...]` in the location (e.g. 'constrained-int')."""
    return isinstance(part, str) and ("-" in part or "[" in part or part in ("int", "str", "float", "bool"))


def _explain(exc: ValidationError, source: str) -> str:
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        hint = nearest(str(loc[-1]), _section_fields(loc[:-1]))
        return f"{source}: unknown key '{key}'{hint}"
    message = error["msg"].removeprefix("Value error, ")
    if not loc or isinstance(error.get("input"), dict):  # a section's own check: its message names the key
        return f"{source}: {message}"
    key = ".".join(str(p) for p in loc if not _is_union_branch(p))
    return f"{source}: {key}={error.get('input')!r} is invalid: {message}"
