"""Metrics for each task kind, computed from gathered logits (scikit-learn does the arithmetic)."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

# Metrics where lower is better; every other metric is maximised.
MINIMISED = {"loss", "mae", "mse", "rmse", "wer", "cer"}
MULTI_LABEL_THRESHOLD = 0.5


def is_minimised(name: str) -> bool:
    return name.rpartition("/")[2] in MINIMISED  # a multi-task metric: `<task>/rmse`


def probabilities(logits: np.ndarray, problem: str) -> np.ndarray:
    """Class probabilities (softmax), label probabilities (sigmoid), or the values (regression)."""
    if problem == "classification":
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)
    if problem == "multi-label":
        return 1.0 / (1.0 + np.exp(-logits))
    return logits.reshape(len(logits), -1)[:, 0] if logits.ndim > 1 and logits.shape[1] == 1 else logits


def compute_metrics(logits: np.ndarray, targets: np.ndarray, problem: str,
                    labels: list[str] | None = None) -> dict[str, float]:
    """Headline metrics for the task; per-class details live in `classification_details`."""
    if _multitask(labels):  # one block of `<task>/<metric>` per head (models/multitask.py)
        from lobell.models.multitask import task_metrics

        return task_metrics(labels, logits, targets)
    if problem == "ctc":  # labels: the character vocabulary; logits: frame outputs (SpeechAdapter.forward)
        from lobell.transcripts import error_rates, greedy_transcripts, reference_transcripts

        return error_rates(reference_transcripts(targets, labels), greedy_transcripts(logits, labels))
    if problem == "classification":
        predictions = logits.argmax(axis=1)
        return {"accuracy": float(skm.accuracy_score(targets, predictions)),
                "f1_macro": float(skm.f1_score(targets, predictions, average="macro",
                                               labels=list(range(logits.shape[1])), zero_division=0))}
    if problem == "multi-label":
        predictions = (probabilities(logits, problem) >= MULTI_LABEL_THRESHOLD).astype(int)
        truth = targets.astype(int)
        return {"accuracy": float(skm.accuracy_score(truth, predictions)),  # exact match of the label set
                "f1_micro": float(skm.f1_score(truth, predictions, average="micro", zero_division=0)),
                "f1_macro": float(skm.f1_score(truth, predictions, average="macro", zero_division=0))}
    values = probabilities(logits, problem)
    mse = float(skm.mean_squared_error(targets, values))
    pearson = float(np.corrcoef(targets, values)[0, 1]) if len(targets) > 1 and np.std(values) > 0 else 0.0
    return {"mae": float(skm.mean_absolute_error(targets, values)), "rmse": mse ** 0.5,
            "r2": float(skm.r2_score(targets, values)) if len(targets) > 1 else 0.0, "pearson": pearson}


def classification_details(logits: np.ndarray, targets: np.ndarray, problem: str,
                           labels: list[str]) -> dict:
    """Per-class precision/recall/F1 and (single-label) the confusion matrix."""
    if problem == "classification":
        predictions = logits.argmax(axis=1)
        report = skm.classification_report(targets, predictions, labels=list(range(len(labels))),
                                           target_names=labels, output_dict=True, zero_division=0)
        matrix = skm.confusion_matrix(targets, predictions, labels=list(range(len(labels))))
        return {"per_class": {k: report[k] for k in labels}, "confusion_matrix": matrix.tolist()}
    predictions = (probabilities(logits, problem) >= MULTI_LABEL_THRESHOLD).astype(int)
    f1 = skm.f1_score(targets.astype(int), predictions, average=None, zero_division=0)
    return {"per_label_f1": {name: float(v) for name, v in zip(labels, f1)}}


def write_predictions(path, inputs: list, logits: np.ndarray, targets: np.ndarray, problem: str,
                      labels: list[str] | None, loss_fn) -> None:
    """One JSON line per example: input, target, prediction, probability and its own loss.

    The report reads it for the confusion matrix and the top-loss examples.
    """
    import json

    import torch

    from lobell.run_dir import atomic_write_text

    if _multitask(labels):  # per example, a target and prediction per task (models/multitask.py)
        from lobell.models.multitask import write_task_predictions

        return write_task_predictions(path, labels, inputs, logits, targets, loss_fn)
    probs = probabilities(logits, problem)
    if problem == "ctc":
        from lobell.transcripts import error_rates, greedy_transcripts, reference_transcripts

        heard, said = greedy_transcripts(logits, labels), reference_transcripts(targets, labels)
    lines = []
    for i, item in enumerate(inputs):
        loss = float(loss_fn(torch.from_numpy(logits[i : i + 1]), torch.from_numpy(targets[i : i + 1])))
        record = {"index": i, "input": str(item), "loss": loss}
        if problem == "classification":
            record.update(target=labels[int(targets[i])], prediction=labels[int(probs[i].argmax())],
                          probability=float(probs[i].max()))
        elif problem == "multi-label":
            record.update(target=[n for n, t in zip(labels, targets[i]) if t >= 0.5],
                          prediction=[n for n, p in zip(labels, probs[i]) if p >= MULTI_LABEL_THRESHOLD],
                          probabilities=[float(p) for p in probs[i]])
        elif problem == "ctc":
            record.update(target=said[i], prediction=heard[i], cer=error_rates([said[i]], [heard[i]])["cer"])
        else:
            record.update(target=float(targets[i]), prediction=float(probs[i]))
        lines.append(json.dumps(record))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _multitask(labels) -> bool:
    """A multi-task run passes its TaskHeads where a single task passes its label names."""
    from lobell.data.multitask import TaskHeads

    return isinstance(labels, TaskHeads)
