"""COCO mAP through torchmetrics, and the Fashion-MNIST scene set's boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lobell.data.detection import read_detection
from lobell.data.detection.scenes import make_scenes
from lobell.detection_metrics import DetectionMetrics

NAMES = ["bag", "sneaker", "trouser"]
TRUTH = [{"boxes": torch.tensor([[0.0, 0.0, 20.0, 20.0], [30.0, 30.0, 60.0, 50.0]]), "labels": torch.tensor([0, 1])},
         {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]


def _predict(boxes, labels, scores) -> list[dict]:
    return [{"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels),
             "scores": torch.tensor(scores, dtype=torch.float32)},
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "scores": torch.zeros(0)}]


def test_perfect_boxes_score_one_and_a_class_without_boxes_has_no_ap():
    metrics = DetectionMetrics(NAMES)
    metrics.update(_predict([[0, 0, 20, 20], [30, 30, 60, 50]], [0, 1], [0.9, 0.8]), TRUTH)
    result = metrics.compute()
    assert result["map"] == 1.0 and result["map_50"] == 1.0
    assert result["ap_per_class"] == {"bag": 1.0, "sneaker": 1.0, "trouser": None}
    assert result["recall_per_class"]["sneaker"] == 1.0


def test_wrong_class_and_loose_boxes_lower_the_right_figures():
    metrics = DetectionMetrics(NAMES)
    # bag: right class at IoU 0.8 (a match at thresholds .5 to .75: 6 of COCO's 10); sneaker: called trouser
    metrics.update(_predict([[0, 0, 20, 25], [30, 30, 60, 50]], [0, 2], [0.9, 0.8]), TRUTH)
    result = metrics.compute()
    assert result["ap_per_class"]["sneaker"] == 0.0 and result["recall_per_class"]["sneaker"] == 0.0
    assert result["ap_per_class"]["bag"] == pytest.approx(0.6)
    assert result["map_50"] == pytest.approx(0.5)
    assert result["map"] == pytest.approx(0.3)  # the mean over the classes that have true boxes
    metrics.reset()
    metrics.update(_predict([[0, 0, 20, 20], [30, 30, 60, 50]], [0, 1], [0.9, 0.8]), TRUTH)
    assert metrics.compute()["map"] == 1.0


@pytest.mark.parametrize("format", ["coco", "yolo"])
def test_scenes_hold_real_items_inside_their_tight_boxes(tmp_path, format):
    paths = make_scenes(tmp_path, {"train": 12, "validation": 4}, size=64, classes=["bag", "trouser"], format=format)
    train = read_detection(paths["train"])
    validation = read_detection(paths["validation"], "validation", class_names=train.class_names)
    assert train.class_names == ["bag", "trouser"] and len(train.samples) == 12 and len(validation.samples) == 4
    assert train.num_boxes >= 12 and not train.notes  # at least one item per scene; nothing clipped
    for s in train.samples:
        pixels = np.asarray(Image.open(s.image), dtype=np.float32)
        assert pixels.shape == (64, 64, 3)
        for x0, y0, x1, y1 in s.boxes.astype(int).tolist():
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64 and (x1 - x0) >= 4 and (y1 - y0) >= 4
    again = make_scenes(tmp_path / "again", {"train": 12, "validation": 4}, size=64, classes=["bag", "trouser"],
                        format=format)
    repeat = read_detection(again["train"])
    assert all(np.array_equal(a.boxes, b.boxes) for a, b in zip(train.samples, repeat.samples))  # seeded
