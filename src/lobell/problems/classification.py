"""Single-label classification: softmax over the classes, accuracy and macro F1."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm

from lobell.data.tables import LabelSpace, label_strings
from lobell.errors import LobellError
from lobell.problems.base import softmax


@dataclass
class Classification:
    labels: list[str]
    name = "classification"
    default_loss = "cross-entropy"
    allowed_losses = frozenset({"cross-entropy", "bce"})
    default_monitor = "accuracy"
    hf_problem_type = "single_label_classification"  # transformers' config.problem_type: what plain transformers code sees

    stratify = True  # a held-out validation split keeps each class's share
    min_classes = 2
    conflicts_matter = True  # an input seen with two labels is worth a note

    @property
    def num_outputs(self) -> int:
        return len(self.labels)

    # Targets: class names in the label column -> class ids.
    @staticmethod
    def read_targets(frame, column: str, path) -> list:
        return label_strings(frame, column, path)

    @staticmethod
    def fit_labels(raw: list, path, column: str) -> list[str]:
        if not raw:
            raise LobellError(f"data file '{path}' column '{column}' holds no labels")
        return LabelSpace.from_values(raw).names

    def encode(self, raw: list, path, column: str, frame=None) -> np.ndarray:
        return LabelSpace(self.labels).encode(raw, path, column, frame)

    def target_dtype(self) -> str:
        return "long"

    def dummy_targets(self, n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.int64)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits)

    def metrics(self, logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        predictions = logits.argmax(axis=1)
        return {"accuracy": float(skm.accuracy_score(targets, predictions)),
                "f1_macro": float(skm.f1_score(targets, predictions, average="macro",
                                               labels=list(range(logits.shape[1])), zero_division=0))}

    def details(self, logits: np.ndarray, targets: np.ndarray) -> dict:
        """Per-class precision/recall/F1 and the confusion matrix."""
        predictions = logits.argmax(axis=1)
        labels = self.labels
        report = skm.classification_report(targets, predictions, labels=list(range(len(labels))),
                                           target_names=labels, output_dict=True, zero_division=0)
        matrix = skm.confusion_matrix(targets, predictions, labels=list(range(len(labels))))
        return {"per_class": {k: report[k] for k in labels}, "confusion_matrix": matrix.tolist()}

    def records(self, logits: np.ndarray, targets: np.ndarray) -> list[dict]:
        probs = self.probabilities(logits)
        return [{"target": self.labels[int(t)], "prediction": self.labels[int(p.argmax())],
                 "probability": float(p.max())} for t, p in zip(targets, probs)]

    def table(self, logits: np.ndarray):
        import pandas as pd

        probs = self.probabilities(logits)
        best = probs.argmax(axis=1)
        return pd.DataFrame({"prediction": [self.labels[i] for i in best],
                             "probability": probs[np.arange(len(best)), best]})
