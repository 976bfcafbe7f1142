"""Pascal VOC XML: one file per image with <size> and <object><name>/<bndbox> entries (pixel coordinates)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from lobell.data.detection.boxes import (BoxChecker, DetectionData, check_declared_size, image_size,
                                         negatives_note, sample)
from lobell.errors import LobellError

# VOC's own split lists: ImageSets/Main/<name>.txt, one image id per line.
_SPLIT_FILES = {"train": "train", "validation": "val", "test": "test"}


def annotation_files(path: Path, split: str = "train") -> list[Path]:
    """The XML files of a VOC root (Annotations/, filtered by ImageSets/Main/<split>.txt when present) or a folder."""
    path = Path(path)
    folder = path / "Annotations" if (path / "Annotations").is_dir() else path
    listing = path / "ImageSets" / "Main" / f"{_SPLIT_FILES[split]}.txt"
    if listing.is_file():
        ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
        files = [folder / f"{i}.xml" for i in ids]
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise LobellError(f"VOC split list '{listing}' names '{missing[0].stem}' but '{missing[0]}' does not exist")
        return files
    files = sorted(folder.glob("*.xml"))
    if not files:
        raise LobellError(f"VOC folder '{path}' holds no .xml annotation files")
    return files


def read_voc(path: Path, split: str = "train", class_names: list[str] | None = None) -> DetectionData:
    """Read VOC annotations; without `class_names`, the classes are the object names found, sorted.

    Coordinates are taken as written (pixels, as Ultralytics and torchvision read them); images are
    looked up beside the XML, in a JPEGImages/ or images/ folder next to Annotations/, by <filename>.
    Objects marked <difficult>1</difficult> are kept.
    """
    files = annotation_files(path, split)
    parsed = [_parse(file) for file in files]
    names = class_names or sorted({name for _, _, objects in parsed for name, _, _ in objects})
    index = {name: i for i, name in enumerate(names)}
    checker, samples = BoxChecker(), []
    for file, (image, declared, objects) in zip(files, parsed):
        size = image_size(image, f"'{file}'")
        check_declared_size(declared, size, f"'{file}' <size>", image)
        boxes, labels = [], []
        for name, box, row in objects:
            where = f"'{file}' object {row}"
            if name not in index:
                raise LobellError(f"{where}: class '{name}' is not one of the training classes "
                                  f"({', '.join(names)})")
            boxes.append(checker.check(box, size[0], size[1], where))
            labels.append(index[name])
        samples.append(sample(image, boxes, labels, size))
    data = DetectionData(samples, list(names), "voc", str(path))
    data.notes += checker.notes(str(path)) + negatives_note(data)
    return data


def _parse(file: Path) -> tuple[Path, tuple[int, int], list[tuple[str, tuple, int]]]:
    """(image path, declared (width, height), [(class name, (x0, y0, x1, y1), object number)])."""
    try:
        root = ET.parse(file).getroot()
    except (OSError, ET.ParseError) as exc:
        raise LobellError(f"VOC file '{file}' cannot be parsed as XML: {exc}") from None
    filename = (root.findtext("filename") or "").strip()
    if not filename:
        raise LobellError(f"VOC file '{file}' has no <filename>")
    size = root.find("size")
    declared = (_int(size, "width", file), _int(size, "height", file)) if size is not None else (0, 0)
    objects = []
    for row, obj in enumerate(root.findall("object"), start=1):
        box = obj.find("bndbox")
        name = (obj.findtext("name") or "").strip()
        if box is None or not name:
            raise LobellError(f"'{file}' object {row}: needs a <name> and a <bndbox>")
        try:
            coords = tuple(float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            raise LobellError(f"'{file}' object {row}: <bndbox> needs numeric xmin, ymin, xmax and ymax") from None
        objects.append((name, coords, row))
    return _find_image(file, filename), declared, objects


def _int(node, key: str, file: Path) -> int:
    try:
        return int(float(node.findtext(key) or 0))
    except ValueError:
        raise LobellError(f"VOC file '{file}': <size><{key}> is not a number") from None


def _find_image(file: Path, filename: str) -> Path:
    base = file.parent.parent if file.parent.name == "Annotations" else file.parent
    candidates = [file.parent / filename, base / "JPEGImages" / filename, base / "images" / filename]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise LobellError(f"VOC file '{file}': its image '{filename}' is in none of "
                      f"{', '.join(str(c.parent) for c in candidates)}; the images and annotations do not match")
