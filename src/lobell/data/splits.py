"""Train/validation/test splits of (input, target) pairs for any task kind and modality."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lobell.config import DataConfig
from lobell.data.tables import MIN_TRAIN_EXAMPLES, read_table, require_columns, split_train_validation, text_column
from lobell.errors import LobellError
from lobell.problems import PROBLEMS, Problem, make_problem

@dataclass
class Split:
    inputs: list  # texts, or image/audio paths
    targets: np.ndarray  # class ids (int64), multi-hot rows (float32) or values (float32)
    source: str

    def __len__(self) -> int:
        return len(self.inputs)

    def subset(self, indices: np.ndarray) -> Split:
        return Split([self.inputs[i] for i in indices], self.targets[indices], self.source)


@dataclass
class Splits:
    train: Split
    validation: Split
    test: Split | None
    labels: list[str] | None  # the problem's labels (class names, CTC vocabulary, TaskHeads; None for regression)
    notes: list[str]  # what was done to the data, for the log
    problem: Problem  # what the model predicts: targets, loss, metrics, outputs (problems/)


def read_inputs_and_targets(path: Path, input_column: str, label_column: str | None,
                            problem: str) -> tuple[list[str], list | None, pd.DataFrame]:
    """Inputs and raw labels (None when the file has no label column and none is required)."""
    frame = read_table(path)
    required = {"data.text_column": input_column}
    if label_column is not None:
        required["data.label_column"] = label_column
    require_columns(frame, required, path)
    inputs = text_column(frame, input_column, path)
    raw = None
    if label_column is not None:
        raw = _raw_targets(frame, label_column, path, problem)
    return inputs, raw, frame


def load_splits(cfg: DataConfig, problem: str, seed: int, input_column: str | None = None,
                read=read_inputs_and_targets) -> Splits:
    """Read train (and validation/test, or a split of train), encode targets the same way for all."""
    if cfg.train is None:
        raise LobellError("no training data: set data.train to a .csv, .jsonl or .parquet file")
    column = input_column or cfg.text_column
    notes: list[str] = []
    train_inputs, train_raw, frame = read(cfg.train, column, cfg.label_column, problem)
    encoder = TargetEncoder.fit(problem, train_raw, cfg.train, cfg.label_column)
    train = Split(train_inputs, encoder.encode(train_raw, cfg.train, frame), str(cfg.train))
    if len(encoder.labels or ()) < PROBLEMS[problem].min_classes:
        raise LobellError(f"data file '{cfg.train}' column '{cfg.label_column}' holds a single class "
                          f"({encoder.labels[0]!r}): classification needs at least two; add examples of the other "
                          f"class(es) or check data.label_column")
    notes += duplicate_notes(train_inputs, train_raw, str(cfg.train), problem)
    if cfg.validation is not None:
        inputs, raw, frame = read(cfg.validation, column, cfg.label_column, problem)
        validation = Split(inputs, encoder.encode(raw, cfg.validation, frame), str(cfg.validation))
        notes += overlap_notes("validation", inputs, train_inputs)
    else:
        stratify = train.targets if PROBLEMS[problem].stratify else None
        train_idx, val_idx = split_train_validation(len(train), stratify, cfg.val_fraction, seed,
                                                    source=f"data file '{cfg.train}'")
        validation = train.subset(val_idx)
        validation.source = f"{cfg.train} (held-out {cfg.val_fraction:.0%})"
        train = train.subset(train_idx)
        notes.append(f"validation: {len(validation)} examples held out of {cfg.train} (seed {seed})")
    test = None
    if cfg.test is not None:
        inputs, raw, frame = read(cfg.test, column, cfg.label_column, problem)
        test = Split(inputs, encoder.encode(raw, cfg.test, frame), str(cfg.test))
        notes += overlap_notes("test", inputs, train_inputs)
    train = _limit(train, cfg.max_train_samples, seed, notes, "train")
    validation = _limit(validation, cfg.max_eval_samples, seed, notes, "validation")
    _check_trainable(train, encoder.labels, problem, notes)
    return Splits(train, validation, test, encoder.labels, notes, make_problem(problem, encoder.labels))


def _check_trainable(train: Split, labels: list[str] | None, problem: str, notes: list[str]) -> None:
    """At least two examples and (classification) two classes left to train on after the splits."""
    if len(train) < MIN_TRAIN_EXAMPLES:
        raise LobellError(f"only {len(train)} training example(s) from '{train.source}' after the splits: training "
                          f"needs at least {MIN_TRAIN_EXAMPLES}; add data or raise data.max_train_samples")
    if not getattr(PROBLEMS.get(problem), "min_classes", 0):  # only classes can go missing (not multi-task)
        return
    absent = [labels[i] for i in sorted(set(range(len(labels))) - set(np.unique(train.targets).tolist()))]
    if len(labels) - len(absent) < 2:
        raise LobellError(f"after holding out validation, the training split of {train.source} holds a single class; "
                          f"add examples (at least two per class) or give data.validation")
    if absent:
        notes.append(f"train: class(es) {absent[:5]} have no training example after the validation split (too few "
                     f"examples); the model cannot learn them")


def duplicate_notes(inputs: list, raw: list, source: str, problem: str) -> list[str]:
    """Rows that repeat (same input and label) and inputs that occur with different labels."""
    keys = [(str(x), _hashable(y)) for x, y in zip(inputs, raw)]
    notes = []
    repeated = len(keys) - len(set(keys))
    if repeated:
        notes.append(f"train: {repeated} duplicated row(s) in {source} (same input and label), kept; drop them if "
                     f"they are not meant to count twice")
    if PROBLEMS[problem].conflicts_matter:
        labels_of: dict[str, set] = {}
        for text, label in keys:
            labels_of.setdefault(text, set()).add(label)
        conflicting = sum(len(found) > 1 for found in labels_of.values())
        if conflicting:
            notes.append(f"train: {conflicting} input(s) in {source} occur with different labels; check them "
                         f"for labelling mistakes")
    return notes


def overlap_notes(name: str, inputs: list, train_inputs: list) -> list[str]:
    """Evaluation inputs that also occur in train make its scores look better than they are."""
    seen = {str(x) for x in train_inputs}
    shared = sum(str(x) in seen for x in inputs)
    if not shared:
        return []
    note = (f"{name}: {shared} of {len(inputs)} inputs also occur in the training data, so its scores are "
            f"optimistic; remove them from one of the files")
    return [note]


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def _limit(split: Split, limit: int | None, seed: int, notes: list[str], name: str) -> Split:
    if limit is None or len(split) <= limit:
        return split
    keep = np.sort(np.random.default_rng(seed).permutation(len(split))[:limit])
    key = "data.max_train_samples" if name == "train" else "data.max_eval_samples"
    notes.append(f"{name}: a random {limit} of {len(split)} examples ({key})")
    return split.subset(keep)


def read_targets(frame: pd.DataFrame, column: str, path: Path, problem: str) -> list:
    """The label column's raw targets as the problem reads them (problems/)."""
    return PROBLEMS[problem].read_targets(frame, column, path)


_raw_targets = read_targets  # the name data/image.py, data/audio.py and data/multitask.py import


@dataclass
class TargetEncoder:
    """Raw targets -> the arrays a model trains on, by the problem's rules; `fit` learns the labels."""

    problem: str
    labels: list[str] | None
    column: str

    @classmethod
    def fit(cls, problem: str, raw: list, path: Path, column: str) -> TargetEncoder:
        return cls(problem, PROBLEMS[problem].fit_labels(raw, path, column), column)

    def encode(self, raw: list, path: Path, frame: pd.DataFrame | None = None) -> np.ndarray:
        return make_problem(self.problem, self.labels).encode(raw, path, self.column, frame)
