"""A small real-image detection set: Fashion-MNIST items placed on varied backgrounds, with their boxes.

No detection data ships offline, so lobell builds one from real images it does ship (the
Fashion-MNIST subset under lobell/assets): each scene holds 1 to `max_objects` items, each
scaled, tinted and composited by its own intensity onto a gradient, texture or stripe background.
The box is the tight box of the item's visible pixels.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from lobell.data.detection.boxes import DetectionSample
from lobell.data.detection.writers import write_coco, write_data_yaml, write_yolo_labels

_VISIBLE = 40  # an item pixel counts for its box above this intensity (0-255)
_MAX_OVERLAP = 0.2  # items are re-placed when their boxes would overlap more than this IoU


def fashion_items(split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The packaged Fashion-MNIST subset's 28 x 28 images, labels and class names of a split."""
    npz = resources.files("lobell") / "assets" / "fashion_mnist" / "fashion_mnist_subset.npz"
    with resources.as_file(npz) as path, np.load(path) as arrays:
        return arrays[f"{split}_images"], arrays[f"{split}_labels"], [str(n) for n in arrays["class_names"]]


def make_scenes(root: Path, counts: dict[str, int] | None = None, size: int = 96, classes: list[str] | None = None,
                max_objects: int = 3, format: str = "coco", seed: int = 0) -> dict[str, Path]:
    """Write scenes under `root/images/<split>/` with COCO (`root/<split>.json`) or YOLO labels.

    Args:
        counts: images per split, default {"train": 240, "validation": 60}; each split draws its
            items from the same split of Fashion-MNIST, so validation items are unseen in training.
        size: image side in pixels; items are 25-50% of it.
        classes: Fashion-MNIST class names to use (default all ten).
        format: `coco` (one JSON per split) or `yolo` (labels/<split>/ + root/data.yaml).

    Returns:
        split -> what to give `data.<split>`: the COCO file, or the data.yaml for YOLO.
    """
    root = Path(root)
    counts = counts or {"train": 240, "validation": 60}
    rng = np.random.default_rng(seed)
    written: dict[str, Path] = {}
    names: list[str] = []
    for split, count in counts.items():
        images, labels, all_names = fashion_items(split)
        names = classes or all_names
        keep = np.isin(labels, [all_names.index(n) for n in names])
        pool = (images[keep], np.array([names.index(all_names[k]) for k in labels[keep]]))
        samples = [_scene(root / "images" / split / f"{i:05d}.png", pool, size, max_objects, rng)
                   for i in range(count)]
        if format == "coco":
            written[split] = write_coco(samples, names, root / f"{split}.json")
        elif format == "yolo":
            write_yolo_labels(samples)
        else:
            raise ValueError(f"format must be coco or yolo, got {format!r}")
    if format == "yolo":
        path = write_data_yaml(root / "data.yaml", names, {s: f"images/{s}" for s in counts})
        written = dict.fromkeys(counts, path)
    return written


def _scene(path: Path, pool: tuple[np.ndarray, np.ndarray], size: int, max_objects: int,
           rng: np.random.Generator) -> DetectionSample:
    canvas = _background(size, rng)
    boxes, labels = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        pick = int(rng.integers(len(pool[0])))
        placed = _place(canvas, pool[0][pick], boxes, rng)
        if placed is not None:
            boxes.append(placed)
            labels.append(int(pool[1][pick]))
    noisy = np.clip(canvas + rng.normal(0, 6, canvas.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(noisy).save(path)
    return DetectionSample(str(path), np.array(boxes, dtype=np.float32).reshape(-1, 4),
                           np.array(labels, dtype=np.int64), size, size)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A float (size, size, 3) canvas: a two-colour gradient, a smooth random texture, or stripes."""
    first, second = rng.uniform(0, 160, 3), rng.uniform(0, 160, 3)
    kind = rng.integers(3)
    if kind == 0:
        angle = rng.uniform(0, np.pi)
        y, x = np.mgrid[0:size, 0:size] / size
        mix = (np.cos(angle) * x + np.sin(angle) * y)
        mix = (mix - mix.min()) / (np.ptp(mix) or 1.0)
    elif kind == 1:
        coarse = rng.uniform(0, 1, (6, 6)).astype(np.float32)
        mix = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC)).clip(0, 1)
    else:
        period = rng.uniform(6, 20)
        y, x = np.mgrid[0:size, 0:size]
        mix = (np.sin((x * np.cos(period) + y * np.sin(period)) * 2 * np.pi / period) + 1) / 2
    return first * (1 - mix[..., None]) + second * mix[..., None]


def _place(canvas: np.ndarray, item: np.ndarray, boxes: list, rng: np.random.Generator) -> list[float] | None:
    """Composite a tinted, scaled item onto the canvas where it overlaps no other much; its tight box."""
    size = canvas.shape[0]
    side = int(rng.integers(size // 4, size // 2 + 1))
    alpha = np.asarray(Image.fromarray(item).resize((side, side), Image.BILINEAR), dtype=np.float32)
    rows, cols = np.nonzero(alpha > _VISIBLE)
    if not len(rows):
        return None
    tint = rng.uniform(150, 255, 3)
    for _ in range(20):
        top, left = (int(v) for v in rng.integers(0, size - side + 1, 2))
        box = [left + cols.min(), top + rows.min(), left + cols.max() + 1.0, top + rows.max() + 1.0]
        if all(_iou(box, other) <= _MAX_OVERLAP for other in boxes):
            weight = (alpha / 255.0)[..., None]
            region = canvas[top:top + side, left:left + side]
            canvas[top:top + side, left:left + side] = region * (1 - weight) + tint * weight
            return [float(v) for v in box]
    return None


def _iou(a: list[float], b: list[float]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0
