"""Multi-label classification: one sigmoid per label, a label predicted at probability >= 0.5."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm

from lobell.data.tables import LabelSpace, row_name
from lobell.errors import LobellError
from lobell.problems.base import MULTI_LABEL_THRESHOLD, sigmoid

_SEPARATORS = re.compile(r"\s*[|;,]\s*")


@dataclass
class MultiLabel:
    labels: list[str]
    name = "multi-label"
    default_loss = "bce"
    allowed_losses = frozenset({"bce"})
    default_monitor = "accuracy"
    hf_problem_type = "multi_label_classification"  # transformers' config.problem_type: what plain transformers code sees

    stratify = False
    min_classes = 0
    conflicts_matter = True

    @property
    def num_outputs(self) -> int:
        return len(self.labels)

    # Targets: label sets (`a|b`, `a;b`, `a,b` or a list) -> multi-hot rows.
    @staticmethod
    def read_targets(frame, column: str, path) -> list:
        return [_split_labels(v) for v in frame[column].tolist()]

    @staticmethod
    def fit_labels(raw: list, path, column: str) -> list[str]:
        values = [v for row in raw for v in row]
        if not values:
            raise LobellError(f"data file '{path}' column '{column}' holds no labels")
        return LabelSpace.from_values(values).names

    def encode(self, raw: list, path, column: str, frame=None) -> np.ndarray:
        space, known = LabelSpace(self.labels), set(self.labels)
        bad = [row for row, names in enumerate(raw) if not known.issuperset(names)]
        if bad:
            unknown = [name for row in bad for name in raw[row] if name not in known]
            raise space.unknown_error(unknown, path, column, row_name(path, bad[0], frame), len(bad))
        hot = np.zeros((len(raw), len(self.labels)), dtype=np.float32)
        for row, names in enumerate(raw):
            hot[row, space.encode(names, path, column)] = 1.0
        return hot

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


def _split_labels(value) -> list[str]:
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in value]
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [part for part in _SEPARATORS.split(str(value).strip()) if part]
