"""COCO JSON: one file per split, `images`, `annotations` (`bbox` = [x, y, width, height] pixels), `categories`."""

from __future__ import annotations

import json
from pathlib import Path

from lobell.data.detection.boxes import (BoxChecker, DetectionData, check_declared_size, image_size,
                                         negatives_note, sample)
from lobell.errors import LobellError


def read_coco(path: Path, image_root: Path | None = None) -> DetectionData:
    """Read a COCO detection file; class ids follow the categories' ids in ascending order.

    Images are looked up under `image_root`, else next to the file, else in an `images/` folder
    beside it. Crowd regions (`iscrowd: 1`) are left out of training and counted in the notes.
    """
    path = Path(path)
    document = _load(path)
    categories = sorted(document["categories"], key=lambda c: c["id"])
    category_index = {c["id"]: i for i, c in enumerate(categories)}
    names = [str(c.get("name", c["id"])) for c in categories]
    root = _image_root(path, document["images"], image_root)
    images, sizes = {}, {}
    for row, entry in enumerate(document["images"]):
        where = f"'{path}' images[{row}] (id {entry.get('id')})"
        if "id" not in entry or "file_name" not in entry:
            raise LobellError(f"{where}: an image entry needs 'id' and 'file_name'")
        file = root / entry["file_name"]
        sizes[entry["id"]] = image_size(file, where)
        check_declared_size((entry.get("width", 0), entry.get("height", 0)), sizes[entry["id"]], where, file)
        images[entry["id"]] = (file, [], [])
    checker, crowd = BoxChecker(), 0
    for row, annotation in enumerate(document["annotations"]):
        where = f"'{path}' annotations[{row}] (id {annotation.get('id')})"
        image_id = annotation.get("image_id")
        if image_id not in images:
            raise LobellError(f"{where}: image_id {image_id!r} is not among the file's images")
        if annotation.get("category_id") not in category_index:
            raise LobellError(f"{where}: category_id {annotation.get('category_id')!r} is not among the file's "
                              f"categories ({', '.join(str(c['id']) for c in categories)})")
        if annotation.get("iscrowd"):
            crowd += 1
            continue
        bbox = annotation.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise LobellError(f"{where}: 'bbox' must be [x, y, width, height], got {bbox!r}")
        x, y, w, h = bbox
        width, height = sizes[image_id]
        file, boxes, labels = images[image_id]
        boxes.append(checker.check((x, y, x + w, y + h), width, height, where))
        labels.append(category_index[annotation["category_id"]])
    samples = [sample(file, boxes, labels, sizes[i]) for i, (file, boxes, labels) in images.items()]
    data = DetectionData(samples, names, "coco", str(path))
    data.notes += checker.notes(str(path)) + negatives_note(data)
    if crowd:
        data.notes.append(f"{path}: left out {crowd} crowd region(s) (iscrowd: 1)")
    return data


def _load(path: Path) -> dict:
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LobellError(f"COCO file '{path}' cannot be read as JSON: {exc}") from None
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(document, dict) or k not in document]
    if missing:
        raise LobellError(f"COCO file '{path}' has no {', '.join(repr(k) for k in missing)} list; a COCO detection "
                          f"file holds 'images', 'annotations' and 'categories'")
    return document


def _image_root(path: Path, images: list[dict], image_root: Path | None) -> Path:
    """Where `file_name`s are relative to: the given root, the file's folder, or its `images/` sibling."""
    if image_root is not None:
        return Path(image_root)
    candidates = [path.parent, path.parent / "images", path.parent.parent / "images"]
    first = next((e.get("file_name") for e in images if e.get("file_name")), None)
    if first is None:
        return path.parent
    for root in candidates:
        if (root / first).is_file():
            return root
    raise LobellError(f"COCO file '{path}': its first image '{first}' is in none of "
                      f"{', '.join(str(c) for c in candidates)}; set data.image_root to the folder that holds the images")
