"""Which detection format a path holds (COCO, YOLO, VOC), and one reader call for all three."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lobell.data.detection.boxes import DetectionData
from lobell.errors import LobellError

FORMATS = ("coco", "yolo", "voc")


def detect_format(path: Path) -> str:
    """coco: a .json file (or a folder with exactly one); yolo: a .yaml file or a folder with labels/ or
    classes.txt; voc: a folder with Annotations/ or .xml files."""
    path = Path(path)
    if not path.exists():
        raise LobellError(f"data '{path}' does not exist")
    if path.is_file():
        by_suffix = {".json": "coco", ".yaml": "yolo", ".yml": "yolo"}
        if path.suffix.lower() in by_suffix:
            return by_suffix[path.suffix.lower()]
        raise LobellError(f"data '{path}' is not a detection data set: give a COCO .json file, a YOLO data.yaml, "
                          f"or a folder of YOLO images/ + labels/ or of Pascal VOC .xml files")
    if (path / "Annotations").is_dir() or any(path.glob("*.xml")):
        return "voc"
    if (path / "labels").is_dir() or (path / "classes.txt").is_file() or (path / "data.yaml").is_file():
        return "yolo"
    if path.name == "images" and (path.parent / "labels").is_dir():
        return "yolo"
    if len(list(path.glob("*.json"))) == 1:
        return "coco"
    raise LobellError(f"data '{path}': cannot tell its detection format; expected a COCO .json file, a YOLO "
                      f"data.yaml or images/ + labels/ folders, or Pascal VOC .xml files (Annotations/)")


def read_detection(path: Path, split: str = "train", class_names: list[str] | None = None,
                   image_root: Path | None = None, format: str | None = None) -> DetectionData:
    """A split in the one in-memory form; `class_names` (the training split's) fixes the class ids.

    Args:
        path: a COCO .json, a YOLO data.yaml or folder, a VOC root or folder of .xml files.
        split: which split of a data.yaml or VOC ImageSets list to read (train, validation, test).
        class_names: the training classes: a validation class that training lacks is an error,
            and the ids are renumbered to the training order.
        image_root: COCO only: the folder the file's `file_name`s are relative to.
        format: coco, yolo or voc; detected from the path when None.
    """
    path = Path(path)
    format = format or detect_format(path)
    if format not in FORMATS:
        raise LobellError(f"data.format '{format}' is not one of {', '.join(FORMATS)}")
    if format == "coco":
        from lobell.data.detection.coco import read_coco

        data = read_coco(path if path.is_file() else next(path.glob("*.json")), image_root)
    elif format == "yolo":
        from lobell.data.detection.yolo import read_yolo

        data = read_yolo(path, split)
    else:
        from lobell.data.detection.voc import read_voc

        data = read_voc(path, split, class_names)
    if class_names is not None and data.class_names != list(class_names):
        _renumber(data, list(class_names))
    if not data.samples:
        raise LobellError(f"data '{path}' holds no images")
    return data


def _renumber(data: DetectionData, class_names: list[str]) -> None:
    """Map a split's class ids onto the training split's by name; an unseen class is an error."""
    index = {name: i for i, name in enumerate(class_names)}
    used = {data.class_names[int(label)] for s in data.samples for label in s.labels}
    unknown = sorted(used - set(index))
    if unknown:
        raise LobellError(f"data '{data.source}' has class(es) {', '.join(unknown)} that the training data does "
                          f"not have ({', '.join(class_names)})")
    mapping = np.array([index.get(name, -1) for name in data.class_names], dtype=np.int64)
    for s in data.samples:
        s.labels = mapping[s.labels] if len(s.labels) else s.labels
    data.class_names = class_names
