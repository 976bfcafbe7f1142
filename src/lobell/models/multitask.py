"""Several heads on one backbone: the heads module, the weighted loss, per-task metrics and outputs.

The backbone's pooled features (what its output layer used to read) feed one head per task. The
heads sit where the output layer was, inside the same text or image adapter, and return their
logits side by side, one block per task (data/multitask.py's `TaskHeads` knows the layout). So the
runner, freeze plans, checkpoints and save/load see one model whose head group holds every head.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from lobell.config import Config
from lobell.data.multitask import TaskHeads
from lobell.errors import LobellError
from lobell.evaluate import MULTI_LABEL_THRESHOLD, compute_metrics, probabilities
from lobell.models.heads import build_head


class MultiTaskHeads(nn.Module):
    """One `heads.build_head` Sequential per task, in task order; forward returns their logits side by side."""

    def __init__(self, heads: dict[str, nn.Module]):
        super().__init__()
        self.heads = nn.ModuleDict()
        for name, head in heads.items():
            if hasattr(self.heads, name):  # nn.ModuleDict would refuse it with a KeyError
                raise LobellError(f"tasks: the name {name!r} is reserved by PyTorch modules; rename that task")
            self.heads[name] = head
        self.out_features = sum(head[-1].out_features for head in self.heads.values())

    @classmethod
    def from_spec(cls, spec: dict, num_outputs: int | None = None) -> MultiTaskHeads:
        """Built from a multi-task spec (heads.spec_for): `in_features` and per task its outputs and layers."""
        heads = {task["name"]: build_head(spec["in_features"], task["outputs"], task["hidden"], task["dropout"],
                                          task["batch_norm"], task["activation"]) for task in spec["tasks"]}
        module = cls(heads)
        if num_outputs is not None and module.out_features != num_outputs:
            raise LobellError(f"the saved heads give {module.out_features} outputs but the model expects {num_outputs}")
        return module

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(features) for head in self.heads.values()], dim=1)


def head_section(cfg: Config, heads: TaskHeads) -> dict:
    """The adapters' `head` argument for these tasks: each head gets the `head:` section's layers
    (none by default: one new Linear per task)."""
    layers = cfg.head.model_dump() if cfg.head is not None else {"hidden": [], "dropout": 0.0,
                                                                   "batch_norm": False, "activation": "relu"}
    return {"tasks": [{**task.to_dict(), **layers} for task in heads.tasks]}


def build_multitask_adapter(cfg: Config, modality: str, labels, weights: bool = True):
    """The text or image adapter of `cfg.model` with one head per task where its output layer was."""
    if modality not in ("text", "image"):
        raise LobellError(f"tasks: several heads work on text and image models, not task={cfg.task}")
    heads = labels if isinstance(labels, TaskHeads) else TaskHeads.from_config(cfg)  # no data: a skeleton
    head = head_section(cfg, heads)
    if modality == "text":
        from lobell.models.text import TextAdapter

        adapter = TextAdapter.from_pretrained(cfg.model, heads.logit_width, "classification", heads.output_names(),
                                              weights=weights, head=head)
        adapter.model.config.problem_type = None  # no single problem: MultiTaskLoss scores each block
        return adapter
    from lobell.models.vision import VisionAdapter

    return VisionAdapter.from_pretrained(cfg.model, heads.logit_width, weights=cfg.model_weights, head=head,
                                         image_size=cfg.data.image_size, load_weights=weights)


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


def loss_for(labels) -> MultiTaskLoss | None:
    """The runner's hook: a multi-task run's loss (its splits' labels are TaskHeads), else None."""
    return MultiTaskLoss(labels) if isinstance(labels, TaskHeads) else None


def task_metrics(heads: TaskHeads, logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Every task's own metrics and loss as `<task>/<metric>` (the runner adds `loss`, the weighted sum)."""
    metrics: dict[str, float] = {}
    losses = MultiTaskLoss(heads).per_task(torch.from_numpy(logits), torch.from_numpy(np.asarray(targets)))
    for (task, out), (_, target) in zip(heads.logit_blocks(), heads.target_blocks()):
        found = compute_metrics(logits[:, out], heads.unpack(targets, task, target), task.kind, task.labels)
        metrics.update({f"{task.name}/{name}": value for name, value in found.items()})
        metrics[f"{task.name}/loss"] = float(losses[task.name])
    return metrics


def task_outputs(heads: TaskHeads, logits: np.ndarray) -> list[dict[str, dict]]:
    """Per example, per task: the prediction with its probability (probabilities; the value)."""
    rows: list[dict[str, dict]] = [{} for _ in range(len(logits))]
    for task, out in heads.logit_blocks():
        probs = probabilities(logits[:, out], task.kind)
        for row, p in zip(rows, probs):
            if task.kind == "classification":
                row[task.name] = {"prediction": task.labels[int(p.argmax())], "probability": float(p.max())}
            elif task.kind == "multi-label":
                row[task.name] = {"prediction": [n for n, q in zip(task.labels, p) if q >= MULTI_LABEL_THRESHOLD],
                                  "probabilities": [float(q) for q in p]}
            else:
                row[task.name] = {"prediction": float(p)}
    return rows


def write_task_predictions(path, heads: TaskHeads, inputs: list, logits: np.ndarray, targets: np.ndarray,
                           loss_fn) -> None:
    """predictions_<split>.jsonl: per example its input, weighted loss, and per task target and prediction."""
    from lobell.run_dir import atomic_write_text

    lines = []
    for i, (item, outputs) in enumerate(zip(inputs, task_outputs(heads, logits))):
        loss = float(loss_fn(torch.from_numpy(logits[i : i + 1]), torch.from_numpy(targets[i : i + 1])))
        record = {"index": i, "input": str(item), "loss": loss}
        for task, block in heads.target_blocks():
            truth = heads.unpack(targets[i : i + 1], task, block)[0]
            if task.kind == "classification":
                truth = task.labels[int(truth)]
            elif task.kind == "multi-label":
                truth = [n for n, t in zip(task.labels, truth) if t >= 0.5]
            record[task.name] = {"target": truth if task.kind != "regression" else float(truth), **outputs[task.name]}
        lines.append(json.dumps(record))
    atomic_write_text(path, "\n".join(lines) + "\n")


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
    return pd.DataFrame(columns)


def evaluate_task_file(predictor, path, reporter=None) -> dict[str, float]:
    """`lobell evaluate` for a multi-task run: every task's metrics and the weighted loss on a labelled file."""
    from lobell.data.multitask import read_task_columns
    from lobell.data.splits import TargetEncoder
    from lobell.tasks import data_reader

    heads: TaskHeads = predictor.labels
    read = data_reader(predictor.cfg, predictor.modality)
    inputs, raws = read_task_columns(predictor.cfg, read, path, predictor.input_column())
    blocks = [TargetEncoder(task.kind, task.labels, task.label_column).encode(raw, path) for task, raw in
              zip(heads.tasks, raws)]
    targets = np.concatenate([b.astype(np.float32).reshape(len(inputs), -1) for b in blocks], axis=1)
    logits = predictor.logits(inputs, reporter)
    metrics = task_metrics(heads, logits, targets)
    metrics["loss"] = float(MultiTaskLoss(heads)(torch.from_numpy(logits), torch.from_numpy(targets)))
    metrics["examples"] = len(inputs)
    return metrics
