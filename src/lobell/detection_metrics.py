"""COCO detection metrics through torchmetrics' MeanAveragePrecision (pycocotools backend), gathered across processes.

`map` is COCO's mAP@[.5:.95], `map_50` mAP@.5, `mar_100` the recall with up to 100 detections per
image averaged over the same IoU thresholds; per class: AP@[.5:.95] and that recall. A class
without any true box in the split has no AP (None), as in COCO's own evaluation.
"""

from __future__ import annotations

import torch

# Scalars that torchmetrics returns and lobell reports; `map` is what early stopping watches.
SCALARS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100")


class DetectionMetrics:
    """Accumulates predictions and true boxes batch by batch; `compute` syncs over processes when
    torch.distributed is initialised (torchmetrics does it), so every process gets the same figures."""

    def __init__(self, class_names: list[str]):
        from torchmetrics.detection import MeanAveragePrecision

        self.class_names = list(class_names)
        self.metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=True,
                                           backend="pycocotools")

    def update(self, predictions: list[dict[str, torch.Tensor]], targets: list[dict[str, torch.Tensor]]) -> None:
        """predictions: boxes (N, 4) xyxy, scores (N,), labels (N,); targets: boxes and labels."""
        preds = [{k: p[k].detach().float().cpu() if k != "labels" else p[k].detach().long().cpu()
                  for k in ("boxes", "scores", "labels")} for p in predictions]
        truth = [{"boxes": t["boxes"].detach().float().cpu().reshape(-1, 4), "labels": t["labels"].detach().long().cpu()}
                 for t in targets]
        self.metric.update(preds, truth)

    def compute(self) -> dict:
        """{map, map_50, ..., ap_per_class: {name: AP or None}, recall_per_class: {name: recall or None}}."""
        result = self.metric.compute()
        metrics = {key: _value(result[key]) for key in SCALARS if key in result}
        ap = {name: None for name in self.class_names}
        recall = dict(ap)
        classes = result["classes"].reshape(-1).tolist()
        per_ap = result["map_per_class"].reshape(-1).tolist()
        per_recall = result["mar_100_per_class"].reshape(-1).tolist()
        for index, class_id in enumerate(classes):
            if 0 <= int(class_id) < len(self.class_names):
                name = self.class_names[int(class_id)]
                ap[name], recall[name] = _value(per_ap[index]), _value(per_recall[index])
        metrics["ap_per_class"], metrics["recall_per_class"] = ap, recall
        return metrics

    def reset(self) -> None:
        self.metric.reset()


def _value(number) -> float | None:
    """torchmetrics' -1 means "no true box for this": None, so it is neither a 0 nor averaged in."""
    number = float(number)
    return None if number < 0 else round(number, 6)
