"""The `Problem` contract: everything that depends on what the model predicts, and nothing else.

A problem knows how many outputs the head needs, how targets are encoded and batched, which loss
fits by default, which metrics score it (and which of them early stopping watches), how logits
become probabilities, and how one prediction is written (a JSON record, a table row). The runner,
`evaluate`, `predict` and the report ask the run's problem instead of testing `problem == ...`.

A future family plugs in here: a detector's problem would return boxes from `table`/`record` and
mAP from `metrics`; a generator's problem would return text and BLEU/ROUGE, with an adapter whose
`forward` returns the loss itself (`Problem.loss` then just reads it).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

# Metrics where lower is better; every other metric is maximised.
MINIMISED = {"loss", "mae", "mse", "rmse", "wer", "cer", "perplexity"}
MULTI_LABEL_THRESHOLD = 0.5


def is_minimised(name: str) -> bool:
    return name.rpartition("/")[2] in MINIMISED  # a multi-task metric: `<task>/rmse`


@runtime_checkable
class Problem(Protocol):
    name: str  # the config's word for it: classification, multi-label, regression, ctc, multi-task
    labels: Any  # class names, a CTC vocabulary, a multi-task spec (TaskHeads), or None (regression)
    default_loss: str  # loss.name=auto means this
    allowed_losses: frozenset[str]
    default_monitor: str  # what early stopping watches when early_stopping.monitor is left at its default
    hf_problem_type: str | None  # transformers' config.problem_type, or None
    stratify: bool  # a held-out validation split keeps each label's share
    min_classes: int  # distinct labels training needs (classification: 2)

    @property
    def num_outputs(self) -> int: ...

    @staticmethod
    def read_targets(frame, column: str, path) -> list:
        """The label column's values as this problem reads them (one clear error for a bad row)."""

    @staticmethod
    def fit_labels(raw: list, path, column: str) -> Any:
        """The labels the training targets define (class names, a vocabulary), or None."""

    def encode(self, raw: list, path, column: str, frame=None) -> np.ndarray:
        """Raw targets -> what the model trains on (class ids, multi-hot rows, values)."""

    def target_dtype(self) -> str | None:
        """numpy kind the collators give the model: 'long', 'float', or None (variable-length, e.g. transcripts)."""

    def dummy_targets(self, n: int) -> np.ndarray:
        """Placeholder targets for `n` unlabelled inputs (prediction)."""

    def probabilities(self, logits: np.ndarray) -> np.ndarray: ...

    def metrics(self, logits: np.ndarray, targets: np.ndarray) -> dict[str, float]: ...

    def records(self, logits: np.ndarray, targets: np.ndarray) -> list[dict]:
        """Per example, what predictions_<split>.jsonl holds besides index, input and loss."""

    def table(self, logits: np.ndarray) -> Any:
        """`lobell predict`'s columns (a pandas DataFrame), one row per input."""


@runtime_checkable
class CollectsOutputs(Protocol):
    """Optional: a problem whose outputs are not one row of logits per example (detection: a variable
    number of boxes per image) gathers them itself; the runner, `evaluate` and `predict` then pass
    its `collect` result to `metrics`, `records` and `table` instead of gathered logits, and the
    validation metrics hold no `loss` (such a model computes its loss only in training mode)."""

    def collect(self, accelerator, adapter, model, loader, reporter, description: str = "evaluate") -> tuple: ...


def collects_outputs(problem) -> bool:
    return isinstance(problem, CollectsOutputs)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def values(logits: np.ndarray) -> np.ndarray:
    """Regression outputs as one value per example."""
    return logits.reshape(len(logits), -1)[:, 0] if logits.ndim > 1 and logits.shape[1] == 1 else logits


def monitor_for(problem: Problem, configured: str) -> str:
    """The metric early stopping watches: the configured one, or the problem's own where the config
    holds the generic default (`accuracy`, also what saved configs hold)."""
    return problem.default_monitor if configured == "accuracy" else configured
