"""Regression: one value per example, scored by MAE, RMSE (early stopping's default), R^2 and Pearson r."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm

from lobell.data.tables import row_name
from lobell.errors import LobellError
from lobell.problems.base import values


@dataclass
class Regression:
    labels: None = None
    name = "regression"
    default_loss = "mse"
    allowed_losses = frozenset({"mse", "huber"})
    default_monitor = "rmse"
    hf_problem_type = "regression"  # transformers' config.problem_type: what plain transformers code sees

    stratify = False
    min_classes = 0
    conflicts_matter = False  # near-equal inputs with different values are normal

    @property
    def num_outputs(self) -> int:
        return 1

    # Targets: a finite number in every row.
    @staticmethod
    def read_targets(frame, column: str, path) -> list:
        numbers = np.array([_number(v) for v in frame[column].tolist()], dtype=np.float64)
        bad = ~np.isfinite(numbers)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            held = frame[column].iloc[row]
            held = "is empty" if _is_blank(held) else f"holds {_plain(held)!r}"
            raise LobellError(f"data file '{path}' column '{column}' needs a finite number in every row for "
                              f"regression, but {row_name(path, row, frame)} {held} ({int(bad.sum())} such "
                              f"row(s)); fix or drop them")
        return numbers.astype(np.float32).tolist()

    @staticmethod
    def fit_labels(raw: list, path, column: str) -> None:
        return None

    def encode(self, raw: list, path, column: str, frame=None) -> np.ndarray:
        return np.asarray(raw, dtype=np.float32)

    def target_dtype(self) -> str:
        return "float"

    def dummy_targets(self, n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.float32)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return values(logits)

    def metrics(self, logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        predicted = values(logits)
        mse = float(skm.mean_squared_error(targets, predicted))
        pearson = float(np.corrcoef(targets, predicted)[0, 1]) if len(targets) > 1 and np.std(predicted) > 0 else 0.0
        return {"mae": float(skm.mean_absolute_error(targets, predicted)), "rmse": mse ** 0.5,
                "r2": float(skm.r2_score(targets, predicted)) if len(targets) > 1 else 0.0, "pearson": pearson}

    def records(self, logits: np.ndarray, targets: np.ndarray) -> list[dict]:
        return [{"target": float(t), "prediction": float(p)} for t, p in zip(targets, values(logits))]

    def table(self, logits: np.ndarray):
        import pandas as pd

        return pd.DataFrame({"prediction": values(logits)})


def _number(value) -> float:
    """A float, or NaN for anything that is not a number (text, lists, None)."""
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _is_blank(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def _plain(value):
    """numpy scalars as Python ones, so messages read 'x' and 3, not np.str_('x')."""
    return value.item() if hasattr(value, "item") else value
