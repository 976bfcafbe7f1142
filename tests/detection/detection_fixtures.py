"""Detection fixtures: one small scene set written in all three formats, and helpers to break it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from lobell.data.detection.boxes import DetectionSample
from lobell.data.detection.writers import write_coco, write_data_yaml, write_voc, write_yolo_labels

CLASSES = ["bag", "sneaker", "trouser"]


def draw_scene(path: Path, boxes: list[list[float]], size: tuple[int, int] = (80, 64), value: int = 255) -> Path:
    """A black image with a filled white rectangle per box (x0, y0, x1, y1 integer pixels)."""
    pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    for x0, y0, x1, y1 in boxes:
        pixels[int(y0):int(y1), int(x0):int(x1)] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def scene_samples(root: Path) -> list[DetectionSample]:
    """Four images under root/images/: two boxes, one box, one box of another class, and a negative."""
    layout = [([[4, 6, 30, 40], [40, 10, 70, 30]], [0, 2]), ([[10, 12, 50, 60]], [1]), ([[0, 0, 80, 64]], [2]),
              ([], [])]
    samples = []
    for index, (boxes, labels) in enumerate(layout):
        path = draw_scene(root / "images" / f"scene{index}.png", boxes)
        samples.append(DetectionSample(str(path), np.array(boxes, dtype=np.float32).reshape(-1, 4),
                                       np.array(labels, dtype=np.int64), 80, 64))
    return samples


def write_all_formats(root: Path) -> dict[str, Path]:
    """The same scenes as COCO (root/coco/train.json), YOLO (root/yolo/data.yaml) and VOC (root/voc/)."""
    paths = {}
    coco = root / "coco"
    paths["coco"] = write_coco(scene_samples(coco), CLASSES, coco / "train.json")
    yolo = root / "yolo"
    write_yolo_labels(scene_samples(yolo))
    paths["yolo"] = write_data_yaml(yolo / "data.yaml", CLASSES, {"train": "images", "validation": "images"})
    voc = root / "voc"
    samples = scene_samples(voc)
    shutil.move(str(voc / "images"), str(voc / "JPEGImages"))
    for s in samples:
        s.image = str(voc / "JPEGImages" / Path(s.image).name)
    write_voc(samples, CLASSES, voc / "Annotations")
    paths["voc"] = voc
    return paths


def edit_coco(path: Path, change) -> Path:
    """Apply `change(document)` to a COCO file in place."""
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))
    return path
