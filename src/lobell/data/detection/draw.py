"""`lobell predict --draw DIR`: each image with its predicted boxes, class names and scores drawn on it."""

from __future__ import annotations

from pathlib import Path

from PIL import ImageDraw

from lobell.data.image import open_rgb

_COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4",
            "#469990"]


def draw_predictions(image_path: str, boxes: list, labels: list[str], scores: list[float], names: list[str],
                     target: Path) -> Path:
    """Write `image_path` with its boxes to `target` (PNG); a box's colour follows its class."""
    image = open_rgb(image_path)
    pen = ImageDraw.Draw(image)
    width = max(1, round(min(image.size) / 200))
    for box, label, score in zip(boxes, labels, scores):
        colour = _COLOURS[names.index(label) % len(_COLOURS)] if label in names else _COLOURS[0]
        pen.rectangle(box, outline=colour, width=width)
        pen.text((box[0] + 2, box[1] + 1), f"{label} {score:.2f}", fill=colour)
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target)
    return target


def draw_all(table, image_column: str, names: list[str], folder: Path) -> int:
    """One drawn PNG per row of `lobell predict`'s table, named after the image (its index first: unique)."""
    folder = Path(folder)
    for index, row in enumerate(table.to_dict("records")):
        name = f"{index:05d}_{Path(row[image_column]).stem}.png"
        draw_predictions(row[image_column], row["boxes"], row["labels"], row["scores"], names, folder / name)
    return len(table)
