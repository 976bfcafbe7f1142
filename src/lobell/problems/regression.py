"""Regression: one value per example, scored by MAE, RMSE (early stopping's default), R^2 and Pearson r."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm

from lobell.problems.base import values


@dataclass
class Regression:
    labels: None = None
    name = "regression"
    default_loss = "mse"
    allowed_losses = frozenset({"mse", "huber"})
    default_monitor = "rmse"

    @property
    def num_outputs(self) -> int:
        return 1

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
