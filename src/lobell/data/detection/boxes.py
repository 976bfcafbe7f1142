"""The one in-memory form every detection format is read into, and the checks every box passes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from lobell.errors import LobellError


@dataclass
class DetectionSample:
    """One image and its boxes: xyxy float pixels of the image as lobell decodes it (EXIF applied)."""

    image: str  # path of the image file
    boxes: np.ndarray  # (N, 4) float32 x_min, y_min, x_max, y_max in pixels; N may be 0 (a negative)
    labels: np.ndarray  # (N,) int64 class ids 0..C-1, indices into DetectionData.class_names
    width: int
    height: int


@dataclass
class DetectionData:
    """A split of a detection data set: its images with boxes, the class names, and what was adjusted."""

    samples: list[DetectionSample]
    class_names: list[str]
    format: str  # coco, yolo or voc
    source: str  # the file or folder it was read from
    notes: list[str] = field(default_factory=list)  # clipped boxes, negatives, skipped crowd regions

    @property
    def num_boxes(self) -> int:
        return sum(len(s.labels) for s in self.samples)

    def num_negatives(self) -> int:
        return sum(1 for s in self.samples if len(s.labels) == 0)


class BoxChecker:
    """Validates boxes row by row and counts what it clipped, so a split's notes can say so.

    Rules (docs/detection.md): a box must have finite coordinates and a positive width and height
    (else an error naming the file and row); a box that overhangs the image border is clipped to
    the image and counted; a box with nothing left inside the image is an error.
    """

    def __init__(self):
        self.clipped = 0
        self.clipped_example = ""

    def check(self, box: tuple[float, float, float, float], width: int, height: int, where: str) -> list[float]:
        """The box clipped to the image; `where` names the file and row for the error message."""
        x0, y0, x1, y1 = (float(v) for v in box)
        if not all(np.isfinite(v) for v in (x0, y0, x1, y1)):
            raise LobellError(f"{where}: box {_fmt(box)} has a coordinate that is not a number")
        if x1 <= x0 or y1 <= y0:
            raise LobellError(f"{where}: box {_fmt(box)} (x_min, y_min, x_max, y_max) is degenerate: its width "
                              f"{x1 - x0:g} and height {y1 - y0:g} must both be above 0; fix or delete the row")
        cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
        if cx1 <= cx0 or cy1 <= cy0:
            raise LobellError(f"{where}: box {_fmt(box)} lies outside the {width} x {height} image; are the "
                              f"coordinates for another image size or another box format?")
        if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
            self.clipped += 1
            self.clipped_example = self.clipped_example or f"{where}: {_fmt(box)}"
        return [cx0, cy0, cx1, cy1]

    def notes(self, source: str) -> list[str]:
        if not self.clipped:
            return []
        return [f"{source}: clipped {self.clipped} box(es) that overhang the image border to the image "
                f"(first: {self.clipped_example})"]


def _fmt(box) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in box) + "]"


def image_size(path: Path, where: str) -> tuple[int, int]:
    """(width, height) of an image as lobell decodes it (EXIF orientation applied), reading the header only."""
    if not path.is_file():
        raise LobellError(f"{where}: image '{path}' does not exist")
    try:
        with Image.open(path) as image:
            orientation = image.getexif().get(0x0112, 1)
            width, height = image.size
    except (OSError, SyntaxError, ValueError) as exc:
        raise LobellError(f"{where}: image '{path}' cannot be read: {str(exc).strip() or type(exc).__name__}") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def check_declared_size(declared: tuple[int, int], actual: tuple[int, int], where: str, path: Path) -> None:
    """An annotation's width/height must be the image's: boxes drawn on a resized copy would be off."""
    if declared != actual and all(declared):
        raise LobellError(f"{where}: says the image is {declared[0]} x {declared[1]} but '{path}' is "
                          f"{actual[0]} x {actual[1]}; the boxes were drawn on another copy of the image")


def sample(path: Path, boxes: list[list[float]], labels: list[int], size: tuple[int, int]) -> DetectionSample:
    return DetectionSample(str(path), np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                           np.asarray(labels, dtype=np.int64), size[0], size[1])


def negatives_note(data: DetectionData) -> list[str]:
    count = data.num_negatives()
    if not count:
        return []
    return [f"{data.source}: {count} of {len(data.samples)} image(s) have no boxes; kept as negatives "
            f"(background only)"]

