"""Multi-task data: several label columns read, encoded and packed into one target row per example.

Each example's targets are one float32 row holding a block per task, so the existing datasets,
collators and loaders carry them unchanged: a class index (classification), K multi-hot columns
(multi-label), or the value (regression). The model's logits hold a block per task too, K wide
for classification and multi-label, 1 for regression (`TaskHeads` knows both layouts).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lobell.config import Config
from lobell.data.splits import (Split, Splits, TargetEncoder, _check_trainable, _limit, _raw_targets, overlap_notes,
                                split_train_validation)
from lobell.data.tables import require_columns
from lobell.errors import LobellError
from lobell.problems import make_problem


@dataclass
class TaskHead:
    """One task: its name, kind, label column, loss weight and (classification, multi-label) label names."""

    name: str
    kind: str  # classification, multi-label, regression
    label_column: str
    loss_weight: float = 1.0
    labels: list[str] | None = None

    @property
    def outputs(self) -> int:
        """Logits of its block: one per class or label, one value for regression."""
        return 1 if self.kind == "regression" else len(self.labels)

    @property
    def target_width(self) -> int:
        """Target columns of its block: a class index, one column per label, or the value."""
        return len(self.labels) if self.kind == "multi-label" else 1

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "label_column": self.label_column,
                "loss_weight": self.loss_weight, "labels": self.labels, "outputs": self.outputs}


class TaskHeads(list):
    """The tasks of a multi-task run, in head order. As a list it holds the task names (what a run's
    `labels` holds for one task: the names of the model's outputs); `tasks` holds each TaskHead."""

    def __init__(self, tasks: list[TaskHead], label_smoothing: float = 0.0):
        super().__init__(task.name for task in tasks)
        self.tasks = tasks
        self.label_smoothing = label_smoothing  # classification heads, as loss.label_smoothing

    @classmethod
    def from_config(cls, cfg: Config, labels: dict[str, list[str] | None] | None = None) -> TaskHeads:
        """The config's tasks with their label names (`labels`; absent: two placeholder classes, for a skeleton)."""
        labels = labels or {}
        tasks = [TaskHead(t.name, t.kind, t.column, t.loss_weight,
                          None if t.kind == "regression" else labels.get(t.name) or ["a", "b"]) for t in cfg.tasks]
        return cls(tasks, cfg.loss.label_smoothing)

    @classmethod
    def from_spec(cls, spec: dict, label_smoothing: float = 0.0) -> TaskHeads:
        """Back from a saved head spec (config.json's `lobell_head` or `head`)."""
        return cls([TaskHead(t["name"], t["kind"], t["label_column"], t["loss_weight"], t["labels"])
                    for t in spec["tasks"]], label_smoothing)

    @property
    def logit_width(self) -> int:
        return sum(task.outputs for task in self.tasks)

    def logit_blocks(self) -> list[tuple[TaskHead, slice]]:
        return _blocks(self.tasks, [task.outputs for task in self.tasks])

    def target_blocks(self) -> list[tuple[TaskHead, slice]]:
        return _blocks(self.tasks, [task.target_width for task in self.tasks])

    def output_names(self) -> list[str]:
        """One name per logit (`sentiment:pos`, `score`): the model config's id2label."""
        return [f"{task.name}:{label}" if task.labels and task.kind != "regression" else task.name
                for task in self.tasks for label in (task.labels if task.kind != "regression" else [None])]

    def unpack(self, targets: np.ndarray, task: TaskHead, block: slice) -> np.ndarray:
        """One task's targets as its single-task form: class ids (int64), multi-hot rows, or values."""
        values = np.asarray(targets)[:, block]
        if task.kind == "classification":
            return values[:, 0].astype(np.int64)
        return values[:, 0] if task.kind == "regression" else values


def _blocks(tasks: list[TaskHead], widths: list[int]) -> list[tuple[TaskHead, slice]]:
    starts = np.cumsum([0, *widths])
    return [(task, slice(int(start), int(start + width))) for task, start, width in zip(tasks, starts, widths)]


def load_multitask_splits(cfg: Config, read, input_column: str) -> Splits:
    """Train (and validation/test, or a split of train) with every task's column encoded into one target row."""
    data = cfg.data
    if data.train is None:
        raise LobellError("no training data: set data.train to a .csv, .jsonl or .parquet file")
    notes: list[str] = []
    inputs, raws = read_task_columns(cfg, read, data.train, input_column)
    encoders = [TargetEncoder.fit(t.kind, raw, data.train, t.column) for t, raw in zip(cfg.tasks, raws)]
    for task, encoder in zip(cfg.tasks, encoders):
        if task.kind == "classification" and len(encoder.labels) < 2:
            raise LobellError(f"data file '{data.train}' column '{task.column}' (task '{task.name}') holds a single "
                              f"class ({encoder.labels[0]!r}): classification needs at least two; check its "
                              f"label_column or make it a regression task")
    heads = TaskHeads.from_config(cfg, {t.name: e.labels for t, e in zip(cfg.tasks, encoders)})
    train = Split(inputs, _pack(encoders, raws, data.train), str(data.train))
    if data.validation is not None:
        validation = _encoded(cfg, read, data.validation, input_column, encoders)
        notes += overlap_notes("validation", validation.inputs, train.inputs)
    else:
        train, validation = _hold_out(train, heads, data.val_fraction, cfg.seed, data.train)
        notes.append(f"validation: {len(validation)} examples held out of {data.train} (seed {cfg.seed})")
    test = None
    if data.test is not None:
        test = _encoded(cfg, read, data.test, input_column, encoders)
        notes += overlap_notes("test", test.inputs, train.inputs)
    train = _limit(train, data.max_train_samples, cfg.seed, notes, "train")
    validation = _limit(validation, data.max_eval_samples, cfg.seed, notes, "validation")
    _check_trainable(train, None, "multi-task", notes)
    notes.append("tasks: " + ", ".join(f"{t.name} ({t.kind}, column '{t.label_column}', weight {t.loss_weight:g})"
                                       for t in heads.tasks))
    return Splits(train, validation, test, heads, notes, make_problem("multi-task", heads))


def read_task_columns(cfg: Config, read, path: Path, input_column: str) -> tuple[list, list[list]]:
    """The inputs and each task's raw labels; a missing label column names the task and the columns there are."""
    inputs, _, frame = read(path, input_column, None, "classification")
    for index, task in enumerate(cfg.tasks):
        require_columns(frame, {f"tasks[{index}].label_column of task '{task.name}'": task.column}, path)
    return inputs, [_raw_targets(frame, task.column, path, task.kind) for task in cfg.tasks]


def _pack(encoders: list[TargetEncoder], raws: list[list], path: Path) -> np.ndarray:
    blocks = [encoder.encode(raw, path).astype(np.float32).reshape(len(raw), -1)
              for encoder, raw in zip(encoders, raws)]
    return np.concatenate(blocks, axis=1)


def _encoded(cfg: Config, read, path: Path, input_column: str, encoders: list[TargetEncoder]) -> Split:
    inputs, raws = read_task_columns(cfg, read, path, input_column)
    return Split(inputs, _pack(encoders, raws, path), str(path))


def _hold_out(train: Split, heads: TaskHeads, fraction: float, seed: int, path: Path) -> tuple[Split, Split]:
    """A validation split of train, stratified on the first classification task (when there is one)."""
    first = next(((task, block) for task, block in heads.target_blocks() if task.kind == "classification"), None)
    stratify = heads.unpack(train.targets, *first) if first else None
    train_idx, val_idx = split_train_validation(len(train), stratify, fraction, seed, source=f"data file '{path}'")
    validation = train.subset(val_idx)
    validation.source = f"{path} (held-out {fraction:.0%})"
    return train.subset(train_idx), validation
