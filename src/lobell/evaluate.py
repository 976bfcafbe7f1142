"""Metrics and prediction records, computed from gathered logits by the run's problem (problems/).

These functions keep the call shape older code and tests use (`problem` by name plus its labels);
each is one look-up of the problem, which does the work.
"""

from __future__ import annotations

import numpy as np

from lobell.problems import MINIMISED, MULTI_LABEL_THRESHOLD, Problem, is_minimised, make_problem


def probabilities(logits: np.ndarray, problem: str) -> np.ndarray:
    """Class probabilities (softmax), label probabilities (sigmoid), or the values (regression)."""
    return make_problem(problem, [] if problem != "regression" else None).probabilities(logits)


def compute_metrics(logits: np.ndarray, targets: np.ndarray, problem: str | Problem,
                    labels: list[str] | None = None) -> dict[str, float]:
    """Headline metrics for the task; per-class details live in `classification_details`."""
    return _problem(problem, labels).metrics(logits, targets)


def classification_details(logits: np.ndarray, targets: np.ndarray, problem: str, labels: list[str]) -> dict:
    """Per-class precision/recall/F1 and (single-label) the confusion matrix."""
    return make_problem(problem, labels).details(logits, targets)


def write_predictions(path, inputs: list, logits: np.ndarray, targets: np.ndarray, problem: str | Problem,
                      labels: list[str] | None, loss_fn) -> None:
    """One JSON line per example: input, its own loss, then the problem's target and prediction.

    The report reads it for the confusion matrix and the top-loss examples.
    """
    import json

    import torch

    from lobell.run_dir import atomic_write_text

    records = _problem(problem, labels).records(logits, targets)
    lines = []
    for i, (item, record) in enumerate(zip(inputs, records)):
        loss = float(loss_fn(torch.from_numpy(logits[i : i + 1]), torch.from_numpy(targets[i : i + 1])))
        lines.append(json.dumps({"index": i, "input": str(item), "loss": loss, **record}))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _problem(problem: str | Problem, labels) -> Problem:
    return make_problem(problem, labels) if isinstance(problem, str) else problem


__all__ = ["MINIMISED", "MULTI_LABEL_THRESHOLD", "classification_details", "compute_metrics", "is_minimised",
           "probabilities", "write_predictions"]
