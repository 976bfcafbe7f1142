"""Data files (csv, jsonl, parquet) -> checked columns, labels and splits, with clear errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from lobell.errors import LobellError, nearest

READERS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a data file into a DataFrame; every failure is one sentence naming the file."""
    path = Path(path)
    if not path.exists():
        raise LobellError(f"data file '{path}' does not exist")
    if path.is_dir():
        raise LobellError(f"data file '{path}' is a folder; text tasks need a .csv, .jsonl or .parquet file")
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise LobellError(f"data file '{path}' has extension '{path.suffix}'; use one of "
                          f"{', '.join(sorted(READERS))}")
    if path.stat().st_size == 0:
        raise LobellError(f"data file '{path}' is empty")
    try:
        if kind == "csv":
            frame = pd.read_csv(path, encoding="utf-8")
        elif kind == "tsv":
            frame = pd.read_csv(path, sep="\t", encoding="utf-8")
        elif kind == "jsonl":
            frame = pd.read_json(path, lines=True, encoding="utf-8")
        else:
            frame = pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        raise LobellError(f"data file '{path}' is not UTF-8 text (byte {exc.start}): re-save it as UTF-8") from None
    except (ValueError, pd.errors.ParserError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LobellError(f"data file '{path}' could not be read as {kind}: {reason}") from None
    if len(frame) == 0:
        raise LobellError(f"data file '{path}' has a header but no rows")
    return frame


def require_columns(frame: pd.DataFrame, columns: dict[str, str], path: str | Path) -> None:
    """Check that each `{config_key: column}` exists, suggesting the nearest existing column."""
    existing = [str(c) for c in frame.columns]
    for key, column in columns.items():
        if column not in frame.columns:
            hint = nearest(column, existing)
            raise LobellError(f"data file '{path}' has no column '{column}' ({key}){hint}; its columns are: "
                              f"{', '.join(existing)}")


def text_column(frame: pd.DataFrame, column: str, path: str | Path) -> list[str]:
    values = frame[column]
    missing = values.isna() | (values.astype(str).str.strip() == "")
    if missing.any():
        row = int(np.flatnonzero(missing.to_numpy())[0])
        raise LobellError(f"data file '{path}' has {int(missing.sum())} empty value(s) in column '{column}', "
                          f"first at row {row + 2} (counting the header as row 1); fill or drop them")
    return values.astype(str).tolist()


@dataclass
class LabelSpace:
    """The classes of a classification task, in a fixed order (sorted)."""

    names: list[str]

    @classmethod
    def from_values(cls, values: list[str]) -> LabelSpace:
        return cls(sorted(set(values), key=_natural_key))

    def encode(self, values: list[str], path: str | Path, column: str) -> np.ndarray:
        index = {name: i for i, name in enumerate(self.names)}
        unknown = sorted({v for v in values if v not in index})
        if unknown:
            raise LobellError(f"data file '{path}' column '{column}' holds label(s) {unknown[:5]} that never occur "
                              f"in the training data (known: {self.names[:10]})")
        return np.array([index[v] for v in values], dtype=np.int64)


def label_strings(frame: pd.DataFrame, column: str, path: str | Path) -> list[str]:
    values = frame[column]
    if values.isna().any():
        row = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise LobellError(f"data file '{path}' has {int(values.isna().sum())} missing label(s) in column "
                          f"'{column}', first at row {row + 2}; fill or drop them")
    return [_label_text(v) for v in values.tolist()]


def _label_text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _natural_key(name: str):
    return (0, int(name), "") if name.lstrip("-").isdigit() else (1, 0, name)


def split_train_validation(n: int, targets: np.ndarray | None, fraction: float,
                           seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a (stratified where possible) train/validation split."""
    indices = np.arange(n)
    n_val = max(1, int(round(n * fraction)))
    if n - n_val < 1:
        raise LobellError(f"only {n} training examples: too few to hold out data.val_fraction={fraction} "
                          f"for validation; add data or give data.validation")
    stratify = None
    if targets is not None:
        _, counts = np.unique(targets, return_counts=True)
        if counts.min() >= 2 and n_val >= len(counts):
            stratify = targets
    train, val = train_test_split(indices, test_size=n_val, stratify=stratify, random_state=seed)
    return np.sort(train), np.sort(val)
