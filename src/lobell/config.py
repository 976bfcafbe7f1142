"""Typed run configuration: every key, its default and why, in one place.

A config is YAML plus dotted `key=value` overrides. Unknown keys are errors that suggest the nearest
valid key; the resolved config (every default written out) is saved with each run.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from lobell.config_sections import (  # noqa: F401 (every section stays importable from here)
    CheckpointConfig, DataConfig, DistillConfig, GenerationConfig, EarlyStoppingConfig, HeadConfig, LOSSES, LoraConfig,
    LossConfig, MixupConfig, OptimizerConfig, PretrainConfig, STRATEGIES, SchedulerConfig, SpeedConfig, StrategyConfig,
    TASKS,
    TaskHeadConfig, _Section)
from lobell.errors import LobellError, nearest
from lobell.registry import METRICS as PROBLEM_METRICS
from lobell.registry import TASKS as REGISTRY
from lobell.training.budget import parse_duration


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
    # object-detection (docs/detection.md): the classification backbone under model: fasterrcnn,
    # retinanet, fcos or ssdlite (None: torchvision/mobilenet_v2), and where its weights come from
    # (as model_weights; model_weights is then a pre-built detector's own weights file).
    backbone: str | None = None
    backbone_weights: str | None = None
    fpn_channels: int = Field(256, ge=8)  # object-detection: feature-pyramid width (torchvision's 256)
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
    generation: GenerationConfig = GenerationConfig()  # seq2seq / causal-lm decoding (docs/generation.md)
    lora: LoraConfig = LoraConfig()  # used by strategy=lora only
    distill: DistillConfig | None = None  # None: no teacher; a section trains this model as a student
    # text tasks: masked-LM on the training texts first, then the classifier from the adapted encoder
    # (docs/masked-lm.md). None: the classifier starts from `model` as it is.
    pretrain: PretrainConfig | None = None
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
        if self.pretrain is not None and (REGISTRY[self.task][0] != "text" or self.tasks is not None):
            raise ValueError(f"pretrain: adapts a text encoder before its classifier trains; it does not apply to "
                             f"task={self.task}{' with tasks:' if self.tasks is not None else ''}")
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
        # The default, accuracy, stands for the problem's own metric where it has no accuracy (rmse for
        # regression, wer for ctc: resolve.py); saved configs hold it.
        problem = REGISTRY[self.task][1]
        monitor, known = self.early_stopping.monitor, METRICS[problem]
        if monitor not in known and not (monitor == "accuracy" and "accuracy" not in known):
            raise ValueError(f"early_stopping.monitor={monitor!r} is not a metric of {self.task}; use one of "
                             f"{', '.join(known)}{nearest(monitor, known)}")
        return self

    @model_validator(mode="after")
    def _check_image_keys(self) -> Config:
        modality, problem = REGISTRY[self.task]
        mixing = self.mixup.mixup_alpha > 0 or self.mixup.cutmix_alpha > 0
        if mixing and modality == "detection":
            raise ValueError("mixup/cutmix mixes class labels of whole images: it does not apply to object-detection")
        if modality == "detection" and self.head is not None:
            raise ValueError("head applies to classification backbones; a detector keeps its own heads")
        detection_only = {"backbone": self.backbone is not None, "backbone_weights": self.backbone_weights is not None,
                          "fpn_channels": self.fpn_channels != 256}
        used = [key for key, set_ in detection_only.items() if set_ and modality != "detection"]
        if used:
            raise ValueError(f"{used[0]} applies to object-detection, not task={self.task}")
        if modality not in ("image", "detection"):
            image_only = {"model_weights": self.model_weights is not None, "augment": self.augment != "light",
                          "mixup": mixing, "data.image_size": self.data.image_size is not None}
            used = [key for key, set_ in image_only.items() if set_]
            if used:
                raise ValueError(f"{used[0]} applies to image tasks, not task={self.task}")
        audio = {"data.max_seconds": self.data.max_seconds is not None and modality != "audio",
                 "strategy.train_feature_encoder": self.strategy.train_feature_encoder and modality not in
                 ("audio", "speech", "detection"),
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
METRICS = PROBLEM_METRICS  # the names registry.py gives each problem's metrics


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
        set_dotted(raw, key.strip(), _parse_value(value))
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


def with_overrides(cfg: Config, values: dict[str, Any], source: str = "settings") -> Config:
    """A validated copy of `cfg` with dotted `key: value` overrides applied: the one override helper
    (CLI overrides, API settings, the recipe's choices and `lobell compare` all go through it).
    Keys the user left unset stay unset, so their task-dependent defaults still apply."""
    raw = cfg.model_dump(mode="json", exclude_unset=True)
    for key, value in values.items():
        set_dotted(raw, key, value)
    return validate_config(raw, source=source)


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict; a bare name for a shorthand section keeps its other keys."""
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
