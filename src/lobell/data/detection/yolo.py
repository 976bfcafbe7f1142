"""YOLO txt: one `class cx cy w h` line per box (normalised 0-1) in labels/ beside images/, a data.yaml."""

from __future__ import annotations

from pathlib import Path

import yaml

from lobell.data.detection.boxes import BoxChecker, DetectionData, image_size, negatives_note, sample
from lobell.data.image import image_files
from lobell.errors import LobellError

# data.yaml split keys, lobell's split names first (Ultralytics writes `val`).
SPLIT_KEYS = {"train": ("train",), "validation": ("validation", "val"), "test": ("test",)}
_TOLERANCE = 0.01  # normalised values a little outside 0-1 are rounding; the box checker clips them


def read_data_yaml(path: Path) -> dict:
    """The data.yaml as a dict with `names` as a list and `path` resolved against the file's folder."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise LobellError(f"YOLO data file '{path}' cannot be read: {exc}") from None
    if not isinstance(document, dict) or "names" not in document:
        raise LobellError(f"YOLO data file '{path}' has no 'names' (the class names, a list or an id: name map)")
    names = document["names"]
    if isinstance(names, dict):
        ids = sorted(int(k) for k in names)
        if ids != list(range(len(ids))):
            raise LobellError(f"YOLO data file '{path}': 'names' ids must be 0..{len(ids) - 1}, got {ids}")
        names = [names[k] if k in names else names[str(k)] for k in ids]
    if "nc" in document and int(document["nc"]) != len(names):
        raise LobellError(f"YOLO data file '{path}': nc is {document['nc']} but 'names' lists {len(names)} classes")
    root = path.parent / document.get("path", "") if not Path(str(document.get("path", ""))).is_absolute() \
        else Path(document["path"])
    return {**document, "names": [str(n) for n in names], "path": root}


def read_yolo(path: Path, split: str = "train") -> DetectionData:
    """Read a split from a data.yaml, or a folder holding images/ and labels/ (names in classes.txt or data.yaml)."""
    path = Path(path)
    if path.is_dir():
        spec = _folder_spec(path)
        images, source = image_files(path / "images" if (path / "images").is_dir() else path), path
    else:
        spec = read_data_yaml(path)
        images, source = _split_images(spec, path, split), path
    return _read_labels(images, spec["names"], str(source))


def _folder_spec(folder: Path) -> dict:
    for candidate in (folder / "data.yaml", folder.parent / "data.yaml"):
        if candidate.is_file():
            return read_data_yaml(candidate)
    for candidate in (folder / "classes.txt", folder.parent / "classes.txt"):
        if candidate.is_file():
            return {"names": [line.strip() for line in candidate.read_text().splitlines() if line.strip()]}
    raise LobellError(f"YOLO folder '{folder}' has no data.yaml or classes.txt naming its classes")


def _split_images(spec: dict, path: Path, split: str) -> list[Path]:
    key = next((k for k in SPLIT_KEYS[split] if spec.get(k)), None)
    if key is None:
        raise LobellError(f"YOLO data file '{path}' has no '{SPLIT_KEYS[split][-1]}' split")
    entries = spec[key] if isinstance(spec[key], list) else [spec[key]]
    images: list[Path] = []
    for entry in entries:
        where = spec["path"] / str(entry)
        if where.is_dir():
            images += image_files(where)
        elif where.is_file() and where.suffix == ".txt":  # a list of image paths, relative to the list's folder
            images += [where.parent / line.strip() for line in where.read_text().splitlines() if line.strip()]
        else:
            raise LobellError(f"YOLO data file '{path}': {key} entry '{entry}' ({where}) is neither a folder of "
                              f"images nor a .txt list of them")
    if not images:
        raise LobellError(f"YOLO data file '{path}': its {key} split holds no images")
    return images


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last `images` folder of the path becomes `labels`, the suffix `.txt`."""
    parts = list(image.parts)
    if "images" in parts:
        index = len(parts) - 1 - parts[::-1].index("images")
        parts[index] = "labels"
    return Path(*parts).with_suffix(".txt")


def _read_labels(images: list[Path], names: list[str], source: str) -> DetectionData:
    checker, samples, found = BoxChecker(), [], 0
    for image in images:
        size = image_size(image, f"YOLO split '{source}'")
        labels_file = label_path(image)
        boxes, labels = [], []
        if labels_file.is_file():  # an image without a label file is a negative (Ultralytics' rule)
            found += 1
            boxes, labels = _parse_file(labels_file, names, size, checker)
        samples.append(sample(image, boxes, labels, size))
    _check_orphans(images, source)
    if not found:
        raise LobellError(f"YOLO split '{source}': none of its {len(images)} images has a label file (expected e.g. "
                          f"'{label_path(images[0])}' for '{images[0]}')")
    data = DetectionData(samples, names, "yolo", source)
    data.notes += checker.notes(source) + negatives_note(data)
    return data


def _parse_file(labels_file: Path, names: list[str], size: tuple[int, int], checker: BoxChecker):
    width, height = size
    boxes, labels = [], []
    for number, line in enumerate(labels_file.read_text().splitlines(), start=1):
        where = f"'{labels_file}' line {number}"
        values = line.split()
        if not values:
            continue
        try:
            class_id, coords = int(values[0]), [float(v) for v in values[1:]]
        except ValueError:
            raise LobellError(f"{where}: '{line.strip()}' is not 'class cx cy w h' numbers") from None
        if not 0 <= class_id < len(names):
            raise LobellError(f"{where}: class id {class_id} is not one of the {len(names)} classes in 'names' "
                              f"(0..{len(names) - 1})")
        if len(coords) == 4:
            cx, cy, w, h = coords
            x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        elif len(coords) >= 6 and len(coords) % 2 == 0:  # a segment polygon: its bounding box
            xs, ys = coords[0::2], coords[1::2]
            x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
        else:
            raise LobellError(f"{where}: has {len(values)} values; a YOLO box line is 'class cx cy w h'")
        if any(v < -_TOLERANCE or v > 1 + _TOLERANCE for v in coords):
            raise LobellError(f"{where}: values {coords} are not normalised to 0-1 (YOLO boxes are fractions of "
                              f"the image's width and height)")
        boxes.append(checker.check((x0 * width, y0 * height, x1 * width, y1 * height), width, height, where))
        labels.append(class_id)
    return boxes, labels


def _check_orphans(images: list[Path], source: str) -> None:
    """A label file with no image of its name on disk means the images/ and labels/ trees do not match."""
    from lobell.data.image import IMAGE_EXTENSIONS

    expected = {label_path(i) for i in images}
    for folder in sorted({p.parent for p in expected if p.parent.is_dir()}):
        for labels_file in sorted(folder.glob("*.txt")):
            if labels_file in expected or labels_file.name == "classes.txt":
                continue
            image_folder = _images_folder(labels_file.parent)
            if not any((image_folder / (labels_file.stem + ext)).is_file() for ext in IMAGE_EXTENSIONS):
                raise LobellError(f"YOLO split '{source}': label file '{labels_file}' has no image (expected "
                                  f"'{image_folder / labels_file.stem}.jpg' or another image type); the images and "
                                  f"labels trees do not match")


def _images_folder(labels_folder: Path) -> Path:
    parts = list(labels_folder.parts)
    if "labels" in parts:
        parts[len(parts) - 1 - parts[::-1].index("labels")] = "images"
    return Path(*parts)
