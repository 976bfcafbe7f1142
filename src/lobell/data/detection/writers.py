"""Write the in-memory form back out as COCO JSON, YOLO txt + data.yaml, or Pascal VOC XML."""

from __future__ import annotations

import json
import os
from pathlib import Path
from xml.sax.saxutils import escape

import yaml

from lobell.data.detection.boxes import DetectionSample


def write_coco(samples: list[DetectionSample], class_names: list[str], path: Path) -> Path:
    """One COCO file; `file_name`s are relative to its folder, category ids are 1..C (COCO's habit)."""
    path = Path(path)
    images, annotations = [], []
    for image_id, s in enumerate(samples, start=1):
        images.append({"id": image_id, "file_name": os.path.relpath(s.image, path.parent), "width": s.width,
                       "height": s.height})
        for (x0, y0, x1, y1), label in zip(s.boxes.tolist(), s.labels.tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(class_names)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def write_yolo_labels(samples: list[DetectionSample]) -> None:
    """One labels/<name>.txt per image (images must lie under an images/ folder); none for a negative."""
    from lobell.data.detection.yolo import label_path

    for s in samples:
        if not len(s.labels):
            continue
        target = label_path(Path(s.image))
        target.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for (x0, y0, x1, y1), label in zip(s.boxes.tolist(), s.labels.tolist()):
            cx, cy, w, h = (x0 + x1) / 2 / s.width, (y0 + y1) / 2 / s.height, (x1 - x0) / s.width, (y1 - y0) / s.height
            lines.append(f"{label} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
        target.write_text("\n".join(lines) + "\n")


def write_data_yaml(path: Path, class_names: list[str], splits: dict[str, str]) -> Path:
    """A data.yaml: `path: .`, the split folders relative to it (`val` for validation), and the names."""
    keys = {"train": "train", "validation": "val", "test": "test"}
    document = {"path": ".", **{keys[k]: v for k, v in splits.items()}, "names": dict(enumerate(class_names))}
    Path(path).write_text(yaml.safe_dump(document, sort_keys=False))
    return Path(path)


def write_voc(samples: list[DetectionSample], class_names: list[str], folder: Path) -> None:
    """One <image stem>.xml per image in `folder` (its <filename> found beside it or in JPEGImages/)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for s in samples:
        objects = "".join(
            f"<object><name>{escape(class_names[label])}</name><difficult>0</difficult><bndbox>"
            f"<xmin>{x0:g}</xmin><ymin>{y0:g}</ymin><xmax>{x1:g}</xmax><ymax>{y1:g}</ymax></bndbox></object>"
            for (x0, y0, x1, y1), label in zip(s.boxes.tolist(), s.labels.tolist()))
        xml = (f"<annotation><filename>{escape(Path(s.image).name)}</filename><size><width>{s.width}</width>"
               f"<height>{s.height}</height><depth>3</depth></size>{objects}</annotation>")
        (folder / f"{Path(s.image).stem}.xml").write_text(xml)
