"""Train/validation/test splits of (input, target) pairs for any task kind and modality."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lobell.config import DataConfig
from lobell.data.tables import (LabelSpace, label_strings, read_table, require_columns,
                                split_train_validation, text_column)
from lobell.errors import LobellError

_MULTI_LABEL_SEPARATORS = re.compile(r"\s*[|;,]\s*")


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
    labels: list[str] | None  # class names; None for regression
    notes: list[str]  # what was done to the data, for the log


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
    train_inputs, train_raw, _ = read(cfg.train, column, cfg.label_column, problem)
    encoder = TargetEncoder.fit(problem, train_raw, cfg.train, cfg.label_column)
    train = Split(train_inputs, encoder.encode(train_raw, cfg.train), str(cfg.train))
    if problem == "classification" and len(encoder.labels) < 2:
        raise LobellError(f"data file '{cfg.train}' column '{cfg.label_column}' holds a single class "
                          f"({encoder.labels[0]!r}): classification needs at least two")
    if cfg.validation is not None:
        inputs, raw, _ = read(cfg.validation, column, cfg.label_column, problem)
        validation = Split(inputs, encoder.encode(raw, cfg.validation), str(cfg.validation))
    else:
        stratify = train.targets if problem == "classification" else None
        train_idx, val_idx = split_train_validation(len(train), stratify, cfg.val_fraction, seed)
        validation = train.subset(val_idx)
        validation.source = f"{cfg.train} (held-out {cfg.val_fraction:.0%})"
        train = train.subset(train_idx)
        notes.append(f"validation: {len(validation)} examples held out of {cfg.train} (seed {seed})")
    test = None
    if cfg.test is not None:
        inputs, raw, _ = read(cfg.test, column, cfg.label_column, problem)
        test = Split(inputs, encoder.encode(raw, cfg.test), str(cfg.test))
    train = _limit(train, cfg.max_train_samples, seed, notes, "train")
    validation = _limit(validation, cfg.max_eval_samples, seed, notes, "validation")
    return Splits(train, validation, test, encoder.labels, notes)


def _limit(split: Split, limit: int | None, seed: int, notes: list[str], name: str) -> Split:
    if limit is None or len(split) <= limit:
        return split
    keep = np.sort(np.random.default_rng(seed).permutation(len(split))[:limit])
    notes.append(f"{name}: a random {limit} of {len(split)} examples (data.max_{'train' if name == 'train' else 'eval'}_samples)")
    return split.subset(keep)


def _raw_targets(frame: pd.DataFrame, column: str, path: Path, problem: str) -> list:
    if problem == "regression":
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna().to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise LobellError(f"data file '{path}' column '{column}' needs numbers for regression, but row {row + 2} "
                              f"holds {frame[column].iloc[row]!r} ({int(bad.sum())} such row(s))")
        return values.astype(np.float32).tolist()
    if problem == "multi-label":
        return [_split_labels(v) for v in frame[column].tolist()]
    return label_strings(frame, column, path)


def _split_labels(value) -> list[str]:
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in value]
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [part for part in _MULTI_LABEL_SEPARATORS.split(str(value).strip()) if part]


@dataclass
class TargetEncoder:
    problem: str
    labels: list[str] | None
    column: str

    @classmethod
    def fit(cls, problem: str, raw: list, path: Path, column: str) -> TargetEncoder:
        if problem == "regression":
            return cls(problem, None, column)
        values = [v for row in raw for v in row] if problem == "multi-label" else raw
        if not values:
            raise LobellError(f"data file '{path}' column '{column}' holds no labels")
        return cls(problem, LabelSpace.from_values(values).names, column)

    def encode(self, raw: list, path: Path) -> np.ndarray:
        if self.problem == "regression":
            return np.asarray(raw, dtype=np.float32)
        space = LabelSpace(self.labels)
        if self.problem == "classification":
            return space.encode(raw, path, self.column)
        hot = np.zeros((len(raw), len(self.labels)), dtype=np.float32)
        for row, names in enumerate(raw):
            hot[row, space.encode(names, path, self.column)] = 1.0
        return hot
