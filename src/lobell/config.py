"""Typed run configuration: every key, its default and why, in one place.

A config is YAML plus dotted `key=value` overrides. Unknown keys are errors that suggest the nearest
valid key; the resolved config (every default written out) is saved with each run.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lobell.errors import LobellError, nearest

TASKS = (
    "text-classification",
    "text-multi-label",
    "text-regression",
    "image-classification",
    "image-multi-label",
    "image-regression",
)
LOSSES = ("auto", "cross-entropy", "bce", "mse", "huber")
STRATEGIES = ("full", "feature-extraction", "gradual", "discriminative", "two-stage")


class _Section(BaseModel):
    """Base for every config section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


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


class OptimizerConfig(_Section):
    name: Literal["adamw", "adam", "sgd", "rmsprop"] = "adamw"
    # The head's LR; pre-trained groups get lr x their group scale (see strategy).
    lr: float = Field(5e-5, gt=0, lt=10)
    weight_decay: float = Field(0.01, ge=0)  # BERT's value; never applied to biases and norms
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd and rmsprop only
    nesterov: bool = False  # sgd only


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
    name: Literal["full", "feature-extraction", "gradual", "discriminative", "two-stage"] = "full"
    # full/gradual: pre-trained groups train at lr x this (0.4 x 5e-5 = 2e-5, BERT's usual best).
    backbone_lr_scale: float = Field(0.4, gt=0, le=1)
    # discriminative: group LR = head LR x lr_decay ** (distance from the head); combinable.
    lr_decay: float | None = Field(None, gt=0, le=1)
    unfreeze_every: int = Field(1, ge=1)  # gradual: epochs between unfreezing one more group
    max_groups: int | None = Field(None, ge=1)  # gradual: stop unfreezing at this many groups
    frozen_epochs: int = Field(1, ge=1)  # two-stage: head-only epochs first
    unfrozen_lr_factor: float = Field(0.5, gt=0, le=1)  # two-stage: all LRs x this afterwards
    train_bn: bool = False  # frozen batch-norm layers keep their running statistics


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


class MixupConfig(_Section):
    """Mixup / CutMix on training batches (timm's names); both alphas 0 = off."""

    # Off by default: they help long runs on small data sets but slow the first epochs' progress.
    mixup_alpha: float = Field(0.0, ge=0)  # timm's recipes use 0.2-0.8
    cutmix_alpha: float = Field(0.0, ge=0)  # timm's recipes use 1.0
    prob: float = Field(1.0, ge=0, le=1)  # chance that a batch is mixed at all
    switch_prob: float = Field(0.5, ge=0, le=1)  # with both alphas set: chance of CutMix over Mixup


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
    # true: keys you leave unset get the LO-BELL recipe's values for this model and data (see
    # `lobell recipe`, docs/recipe.md); false: the fixed defaults written in this file.
    recipe: bool = True
    # Image models: None loads the pre-trained weights the model name stands for (a packaged copy,
    # the torch/HF cache, or a download); a path loads a local weights file or folder; `random`
    # trains from scratch (for baselines and tests, not for fine-tuning).
    model_weights: str | None = None
    # None: the backbone's own head shape with a new output layer; a section adds new layers.
    head: HeadConfig | None = None
    # Image training augmentation (docs/vision.md): light = random-resized crop (scale 0.5-1) and
    # horizontal flip, mild enough not to pull images far from what the backbone saw in
    # pre-training; none = the evaluation transform; strong adds TrivialAugment and random erasing.
    augment: Literal["none", "light", "strong"] = "light"
    mixup: MixupConfig = MixupConfig()
    # Metrics, group LRs and this config to TensorBoard (RUN_DIR/tensorboard) or MLflow through
    # Accelerate's trackers. Off by default: the run folder already holds every number, and each
    # tracker is an extra package (`pip install "lobell[tracking]"`).
    tracking: Literal["none", "tensorboard", "mlflow"] = "none"

    @model_validator(mode="after")
    def _check_consistency(self) -> Config:
        if self.strategy.name == "two-stage" and self.strategy.frozen_epochs >= self.epochs:
            raise ValueError(
                f"strategy.frozen_epochs={self.strategy.frozen_epochs} leaves no epoch for the "
                f"unfrozen stage of two-stage (epochs={self.epochs}); raise epochs or lower it"
            )
        return self

    @model_validator(mode="after")
    def _check_monitor(self) -> Config:
        # The default, accuracy, stands for rmse in regression (the runner's _monitor): saved configs hold it.
        problem = self.task.partition("-")[2]
        monitor, known = self.early_stopping.monitor, METRICS[problem]
        if monitor not in known and not (problem == "regression" and monitor == "accuracy"):
            raise ValueError(f"early_stopping.monitor={monitor!r} is not a metric of {self.task}; use one of "
                             f"{', '.join(known)}{nearest(monitor, known)}")
        return self

    @model_validator(mode="after")
    def _check_image_keys(self) -> Config:
        modality, _, problem = self.task.partition("-")
        mixing = self.mixup.mixup_alpha > 0 or self.mixup.cutmix_alpha > 0
        if modality != "image":
            # `head` too: a text model's custom head needs TextAdapter to save and reload it (not yet).
            image_only = {"model_weights": self.model_weights is not None, "augment": self.augment != "light",
                          "mixup": mixing, "data.image_size": self.data.image_size is not None,
                          "head": self.head is not None}
            used = [key for key, set_ in image_only.items() if set_]
            if used:
                raise ValueError(f"{used[0]} applies to image tasks, not task={self.task}")
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
           "regression": ("rmse", "mae", "r2", "pearson", "loss")}

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
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        # An optional section (`head: HeadConfig | None`) suggests keys of the section itself.
        annotation = next((a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)),
                          annotation)
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
