"""Multi-label classification: one sigmoid per label, a label predicted at probability >= 0.5."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm

from lobell.problems.base import MULTI_LABEL_THRESHOLD, sigmoid


@dataclass
class MultiLabel:
    labels: list[str]
    name = "multi-label"
    default_loss = "bce"
    allowed_losses = frozenset({"bce"})
    default_monitor = "accuracy"

    @property
    def num_outputs(self) -> int:
        return len(self.labels)

    def target_dtype(self) -> str:
        return "float"

    def dummy_targets(self, n: int) -> np.ndarray:
        return np.zeros((n, len(self.labels)), dtype=np.float32)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return sigmoid(logits)

    def predicted(self, logits: np.ndarray) -> np.ndarray:
        return (self.probabilities(logits) >= MULTI_LABEL_THRESHOLD).astype(int)

    def metrics(self, logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        predictions, truth = self.predicted(logits), targets.astype(int)
        return {"accuracy": float(skm.accuracy_score(truth, predictions)),  # exact match of the label set
                "f1_micro": float(skm.f1_score(truth, predictions, average="micro", zero_division=0)),
                "f1_macro": float(skm.f1_score(truth, predictions, average="macro", zero_division=0))}

    def details(self, logits: np.ndarray, targets: np.ndarray) -> dict:
        f1 = skm.f1_score(targets.astype(int), self.predicted(logits), average=None, zero_division=0)
        return {"per_label_f1": {name: float(v) for name, v in zip(self.labels, f1)}}

    def records(self, logits: np.ndarray, targets: np.ndarray) -> list[dict]:
        probs = self.probabilities(logits)
        return [{"target": [n for n, t in zip(self.labels, truth) if t >= 0.5],
                 "prediction": [n for n, p in zip(self.labels, row) if p >= MULTI_LABEL_THRESHOLD],
                 "probabilities": [float(p) for p in row]} for truth, row in zip(targets, probs)]

    def table(self, logits: np.ndarray):
        import pandas as pd

        probs = self.probabilities(logits)
        table = pd.DataFrame({"prediction": ["|".join(n for n, p in zip(self.labels, row) if p >= 0.5)
                                             for row in probs]})
        for i, name in enumerate(self.labels):
            table[f"probability_{name}"] = probs[:, i]
        return table
