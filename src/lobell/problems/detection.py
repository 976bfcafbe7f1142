"""Object detection: boxes, class ids and scores per image, scored by COCO mAP (early stopping: `map`).

The detector computes its own losses in training mode (`loss()` sums them), and its outputs are
a variable number of boxes per image, not one row of logits: the problem collects them itself
(`collect`), which the runner, `evaluate` and `predict` use in place of gathering logits
(problems/base.py: `CollectsOutputs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_THRESHOLD = 0.5  # predict: boxes below this score are left out of boxes.jsonl (metrics use every box)


@dataclass
class Detection:
    labels: list[str]
    name = "detection"
    default_loss = "detector"  # the detector's own losses (classification, box regression, objectness)
    allowed_losses = frozenset({"detector"})
    default_monitor = "map"
    hf_problem_type = None

    stratify = False
    min_classes = 1
    conflicts_matter = False

    @property
    def num_outputs(self) -> int:
        return len(self.labels)

    def target_dtype(self) -> None:
        return None

    def dummy_targets(self, n: int) -> np.ndarray:
        from lobell.data.detection.boxes import DetectionSample

        empty = np.zeros((0, 4), dtype=np.float32)
        return np.array([DetectionSample("", empty, np.zeros(0, dtype=np.int64), 0, 0) for _ in range(n)],
                        dtype=object)

    def loss(self):
        """(outputs, targets) -> scalar: the sum of the losses the detector returned in training mode."""

        def detector_loss(outputs, targets):
            return sum(outputs.values())

        return detector_loss

    def collect(self, accelerator, adapter, model, loader, reporter, description: str = "evaluate"):
        """Predictions and true boxes for every image exactly once, across all processes, in dataset order."""
        import torch

        model.eval()
        gathered: list = []
        with torch.inference_mode(), reporter.progress(description, len(loader)) as bar:
            for batch in loader:
                outputs = adapter.forward(model, batch)
                rows = [({k: v.cpu() for k, v in o.items()}, {k: v.cpu() for k, v in t.items()}, int(i))
                        for o, t, i in zip(outputs, batch["targets"], batch["index"])]
                gathered += accelerator.gather_for_metrics(rows, use_gather_object=True)
                bar.advance()
        gathered.sort(key=lambda row: row[2])
        return [row[0] for row in gathered], [row[1] for row in gathered]

    def metrics(self, outputs: list[dict], targets: list[dict]) -> dict:
        from lobell.detection_metrics import DetectionMetrics

        scorer = DetectionMetrics(self.labels)
        scorer.update(outputs, targets)
        return scorer.compute()

    def records(self, outputs: list[dict], targets: list[dict], threshold: float = 0.0) -> list[dict]:
        """Per image: true boxes and labels (when known), predicted boxes, label names and scores."""
        rows = []
        for index, output in enumerate(outputs):
            keep = output["scores"] >= threshold
            row = {"boxes": _round(output["boxes"][keep]), "labels": [self.labels[int(i)] for i in output["labels"][keep]],
                   "scores": [round(float(s), 4) for s in output["scores"][keep]]}
            if targets is not None and targets[index] is not None:
                row = {"true_boxes": _round(targets[index]["boxes"]),
                       "true_labels": [self.labels[int(i)] for i in targets[index]["labels"]], **row}
            rows.append(row)
        return rows

    def table(self, outputs: list[dict], threshold: float = DEFAULT_THRESHOLD):
        import pandas as pd

        return pd.DataFrame(self.records(outputs, None, threshold))


def _round(boxes) -> list[list[float]]:
    return [[round(float(v), 2) for v in box] for box in boxes.tolist()]
