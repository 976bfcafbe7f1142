"""Several heads on one backbone, as a problem: the weighted loss, per-task metrics, records and table.

Targets of all tasks are packed into one row per example; `TaskHeads` (data/multitask.py) knows
the layout. Each task's block is scored by its own single-task problem (classification,
multi-label, regression), so this module adds only the packing and the weighting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from lobell.problems.base import MULTI_LABEL_THRESHOLD

if TYPE_CHECKING:
    import pandas as pd

    from lobell.data.multitask import TaskHeads


class MultiTaskLoss:
    """sum over tasks of loss_weight x the task's loss on its block: cross-entropy, BCE or MSE by its kind."""

    def __init__(self, heads: TaskHeads):
        self.heads = heads
        self.blocks = list(zip(heads.logit_blocks(), heads.target_blocks()))

    def per_task(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        losses = {}
        for (task, out), (_, target) in self.blocks:
            block, truth = logits[:, out].float(), targets[:, target].float()
            if task.kind == "classification":
                losses[task.name] = F.cross_entropy(block, truth[:, 0].long(),
                                                    label_smoothing=self.heads.label_smoothing)
            elif task.kind == "multi-label":
                losses[task.name] = F.binary_cross_entropy_with_logits(block, truth)
            else:
                losses[task.name] = F.mse_loss(block[:, 0], truth[:, 0])
        return losses

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        losses = self.per_task(logits, targets)
        return sum(task.loss_weight * losses[task.name] for task in self.heads.tasks)


def task_metrics(heads: TaskHeads, logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Every task's own metrics and loss as `<task>/<metric>` (the runner adds `loss`, the weighted sum)."""
    metrics: dict[str, float] = {}
    losses = MultiTaskLoss(heads).per_task(torch.from_numpy(logits), torch.from_numpy(np.asarray(targets)))
    for (task, out), (_, target) in zip(heads.logit_blocks(), heads.target_blocks()):
        found = single(task.kind, task.labels).metrics(logits[:, out], heads.unpack(targets, task, target))
        metrics.update({f"{task.name}/{name}": value for name, value in found.items()})
        metrics[f"{task.name}/loss"] = float(losses[task.name])
    return metrics


def task_outputs(heads: TaskHeads, logits: np.ndarray) -> list[dict[str, dict]]:
    """Per example, per task: the prediction with its probability (probabilities; the value)."""
    rows: list[dict[str, dict]] = [{} for _ in range(len(logits))]
    for task, out in heads.logit_blocks():
        probs = single(task.kind, task.labels).probabilities(logits[:, out])
        for row, p in zip(rows, probs):
            if task.kind == "classification":
                row[task.name] = {"prediction": task.labels[int(p.argmax())], "probability": float(p.max())}
            elif task.kind == "multi-label":
                row[task.name] = {"prediction": [n for n, q in zip(task.labels, p) if q >= MULTI_LABEL_THRESHOLD],
                                  "probabilities": [float(q) for q in p]}
            else:
                row[task.name] = {"prediction": float(p)}
    return rows


def task_records(heads: TaskHeads, logits: np.ndarray, targets: np.ndarray) -> list[dict]:
    """Per example, per task its target and prediction (predictions_<split>.jsonl)."""
    records = []
    for i, outputs in enumerate(task_outputs(heads, logits)):
        record = {}
        for task, block in heads.target_blocks():
            truth = heads.unpack(targets[i : i + 1], task, block)[0]
            if task.kind == "classification":
                truth = task.labels[int(truth)]
            elif task.kind == "multi-label":
                truth = [n for n, t in zip(task.labels, truth) if t >= 0.5]
            record[task.name] = {"target": truth if task.kind != "regression" else float(truth), **outputs[task.name]}
        records.append(record)
    return records


def task_table(heads: TaskHeads, logits: np.ndarray) -> pd.DataFrame:
    """`lobell predict`'s columns, a block per task: `<task>/prediction` and its probability (probabilities)."""
    columns: dict[str, list] = {}
    outputs = task_outputs(heads, logits)
    for task in heads.tasks:
        cells = [row[task.name] for row in outputs]
        if task.kind == "multi-label":
            columns[f"{task.name}/prediction"] = ["|".join(cell["prediction"]) for cell in cells]
            for i, label in enumerate(task.labels):
                columns[f"{task.name}/probability_{label}"] = [cell["probabilities"][i] for cell in cells]
        else:
            columns[f"{task.name}/prediction"] = [cell["prediction"] for cell in cells]
            if task.kind == "classification":
                columns[f"{task.name}/probability"] = [cell["probability"] for cell in cells]
    import pandas as pd

    return pd.DataFrame(columns)



def single(kind: str, labels):
    from lobell.problems import make_problem

    return make_problem(kind, labels)


class MultiTask:
    """The problem of a run with `tasks:`; its labels are the TaskHeads."""

    name = "multi-task"
    default_loss = "multi-task"  # each task's own loss by its kind, weighted
    allowed_losses = frozenset({"cross-entropy", "bce", "mse", "huber", "multi-task"})  # loss.name is not read
    default_monitor = "accuracy"  # config validation already requires a `<task>/<metric>` monitor
    hf_problem_type = None  # no single problem: each block has its own
    stratify, min_classes, conflicts_matter = False, 0, True

    def __init__(self, labels: TaskHeads):
        self.labels = labels

    @property
    def num_outputs(self) -> int:
        return self.labels.logit_width

    # Targets: each task's column is read and encoded by its own problem, then packed side by side
    # into one row (data/multitask.py, which knows the tasks' columns).
    @staticmethod
    def read_targets(frame, column: str, path) -> list:
        raise NotImplementedError("multi-task targets are read per task (data/multitask.py)")

    @staticmethod
    def fit_labels(raw: list, path, column: str):
        raise NotImplementedError("multi-task labels are fitted per task (data/multitask.py)")

    def encode(self, raw: list, path, column: str, frame=None) -> np.ndarray:
        raise NotImplementedError("multi-task targets are encoded per task (data/multitask.py)")

    def target_dtype(self) -> str:
        return "float"

    def dummy_targets(self, n: int) -> np.ndarray:
        return np.zeros((n, sum(b.stop - b.start for _, b in self.labels.target_blocks())), dtype=np.float32)

    def loss(self):
        return MultiTaskLoss(self.labels)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return logits

    def metrics(self, logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        return task_metrics(self.labels, logits, targets)

    def records(self, logits: np.ndarray, targets: np.ndarray) -> list[dict]:
        return task_records(self.labels, logits, targets)

    def table(self, logits: np.ndarray):
        return task_table(self.labels, logits)
