"""Image data: class folders or path tables -> checked RGB images -> model-specific tensors -> batches."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch.utils.data import Dataset, Sampler
from torchvision.transforms import InterpolationMode, v2

from lobell.data.splits import _raw_targets
from lobell.data.tables import (media_files, missing_or_empty, read_media_folder, read_table, require_columns,
                                resolve_paths, text_column)
from lobell.errors import LobellError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
# ImageNet statistics: the fallback when a model carries no preprocessing of its own.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# RandomResizedCrop area range per augmentation preset: `light` keeps at least half the image, so
# fine-tuning data stays close to what the backbone saw; `strong` uses the ImageNet-training range.
_CROP_SCALE = {"light": (0.5, 1.0), "strong": (0.08, 1.0)}
_ERASE_PROB = 0.25  # strong: random erasing, as in timm's fine-tuning recipes (reprob 0.25)


class ImageReader:
    """The `read` function of `load_splits` for images; remembers the images it skipped."""

    def __init__(self, skip_bad: bool = False):
        self.skip_bad = skip_bad
        self.skipped: list[tuple[str, str]] = []  # (path, reason)

    def __call__(self, path: Path, input_column: str, label_column: str | None,
                 problem: str) -> tuple[list[str], list | None, pd.DataFrame]:
        """Image paths, raw labels (None without a label column) and the table they came from."""
        path = Path(path)
        if not path.exists():
            raise LobellError(f"data '{path}' does not exist")
        read = _read_folder if path.is_dir() else _read_table
        paths, raw, frame = read(path, input_column, label_column, problem)
        keep = self.readable(paths, path)
        if len(keep) < len(paths):
            paths = [paths[i] for i in keep]
            raw = None if raw is None else [raw[i] for i in keep]
            frame = frame.iloc[keep].reset_index(drop=True)
        return paths, raw, frame

    def readable(self, paths: list[str], source: Path | str) -> list[int]:
        """Indices of the usable images; a bad one raises, or with `skip_bad` is recorded and left out."""
        keep = []
        for index, image_path in enumerate(paths):
            reason = image_problem(image_path)
            if reason is None:
                keep.append(index)
            elif self.skip_bad:
                self.skipped.append((image_path, reason))
            else:
                raise LobellError(f"image '{image_path}' (from '{source}') cannot be read: {reason}; fix or remove "
                                  f"it, or set data.skip_bad_images=true to skip unreadable images")
        if not keep:
            raise LobellError(f"data '{source}': none of its {len(paths)} images can be read")
        return keep

    def notes(self) -> list[str]:
        if not self.skipped:
            return []
        shown = "; ".join(f"{p} ({reason})" for p, reason in self.skipped[:3])
        more = f"; and {len(self.skipped) - 3} more" if len(self.skipped) > 3 else ""
        return [f"skipped {len(self.skipped)} unreadable image(s) (data.skip_bad_images): {shown}{more}"]


def _read_folder(path: Path, input_column: str, label_column: str | None, problem: str):
    return read_media_folder(path, input_column, label_column, problem, IMAGE_EXTENSIONS, "image", "cat/1.jpg")


def _read_table(path: Path, input_column: str, label_column: str | None, problem: str):
    """A CSV/JSONL/parquet with an image-path column (relative to the file) and a label column."""
    frame = read_table(path)
    required = {"data.image_column": input_column}
    if label_column is not None:
        required["data.label_column"] = label_column
    require_columns(frame, required, path)
    paths = resolve_paths(text_column(frame, input_column, path), path, frame, "image")
    raw = None if label_column is None else _raw_targets(frame, label_column, path, problem)
    return paths, raw, frame


def image_files(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively, sorted), skipping hidden files and folders."""
    return media_files(folder, IMAGE_EXTENSIONS)


def image_problem(path: str | Path) -> str | None:
    """Why `path` cannot be used as an image (missing, empty, not an image, truncated), or None."""
    path = Path(path)
    if (reason := missing_or_empty(path)) is not None:
        return reason
    try:
        with Image.open(path) as image:
            too_big = _too_big(image)
            if too_big:
                return too_big
            image.draft("RGB", (64, 64))  # JPEG: decode at reduced scale; every byte is still read
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return reason.replace(f" '{path}'", "")  # PIL repeats the path the caller names anyway
    return None


# Memory bound per decoded image: 40 MP is ~120 MB as RGB (a 7,000 x 5,700 photo). A larger JPEG is
# decoded at 1/2, 1/4 or 1/8 scale (libjpeg's draft mode: never more than this many pixels); any
# other format that large is refused rather than risk a worker's memory on one file.
MAX_DECODED_PIXELS = 40_000_000
# JPEGs are decoded at the smallest draft scale that still gives this many pixels on each side:
# well above any backbone's input size, so the model sees the same picture.
DRAFT_SIDE = 1024


def _draft_scale(image: Image.Image) -> int:
    """The libjpeg reduction (1, 2, 4 or 8) that keeps both sides >= DRAFT_SIDE; 1 for other formats."""
    if image.format != "JPEG":
        return 1
    return max(s for s in (1, 2, 4, 8) if s == 1 or min(image.size) // s >= DRAFT_SIDE)


def _reduce(image: Image.Image) -> None:
    """Ask a JPEG to decode at its reduced scale (a no-op for other formats and small images)."""
    if _draft_scale(image) > 1:
        image.draft("RGB", (DRAFT_SIDE, DRAFT_SIDE))


def _too_big(image: Image.Image) -> str | None:
    """Why decoding `image` would exceed MAX_DECODED_PIXELS after any draft reduction, or None."""
    scale = _draft_scale(image)
    width, height = -(-image.width // scale), -(-image.height // scale)
    if width * height <= MAX_DECODED_PIXELS:
        return None
    return (f"it is {image.width} x {image.height} pixels, more than lobell decodes "
            f"({MAX_DECODED_PIXELS // 1_000_000} MP) to keep memory bounded; downscale it first")


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any mode: greyscale is repeated, 16-bit scaled, CMYK converted, alpha over white."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float32)
        peak = 1.0 if image.mode == "F" and values.max() <= 1.0 else (255.0 if values.max() <= 255 else 65535.0)
        image = Image.fromarray(np.clip(values / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def open_rgb(source) -> Image.Image:
    """An RGB image from a path, a PIL image, an array (H, W[, C]) or a tensor ([C,] H, W; uint8 or 0-1 float)."""
    if isinstance(source, Image.Image):
        return to_rgb(source)
    if isinstance(source, torch.Tensor):
        return to_rgb(v2.functional.to_pil_image(source.detach().cpu()))
    if isinstance(source, np.ndarray):
        return to_rgb(Image.fromarray(source))
    try:
        with Image.open(source) as image:
            too_big = _too_big(image)
            if too_big:
                raise LobellError(f"image '{source}' cannot be read: {too_big}")
            _reduce(image)
            image.load()
            return to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LobellError(f"image '{source}' cannot be read: {reason}") from None


@dataclass
class Preprocessing:
    """A model's own input pipeline: resize, centre crop, normalise (timm and torchvision alike)."""

    size: int  # side of the square the model sees
    resize: int  # shorter side before the centre crop (evaluation)
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop_mode: str = "center"  # timm's 'squash' resizes both sides to `resize` first

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        return cls(int(data["size"]), int(data["resize"]), data["interpolation"], tuple(data["mean"]),
                   tuple(data["std"]), data.get("crop_mode", "center"))

    def to_dict(self) -> dict:
        return asdict(self)

    def eval_transform(self) -> v2.Compose:
        side = (self.resize, self.resize) if self.crop_mode == "squash" else self.resize
        return v2.Compose([v2.Resize(side, interpolation=self._mode(), antialias=True), v2.CenterCrop(self.size),
                           *self._to_tensor()])

    def train_transform(self, augment: str) -> v2.Compose:
        """Augmentation preset `none`, `light` or `strong` (see docs/vision.md)."""
        if augment == "none":
            return self.eval_transform()
        crop = v2.RandomResizedCrop(self.size, scale=_CROP_SCALE[augment], interpolation=self._mode(), antialias=True)
        steps = [crop, v2.RandomHorizontalFlip()]
        if augment == "strong":
            steps.append(v2.TrivialAugmentWide(interpolation=self._mode()))
        steps += self._to_tensor()
        if augment == "strong":
            steps.append(v2.RandomErasing(p=_ERASE_PROB))
        return v2.Compose(steps)

    def _mode(self) -> InterpolationMode:
        return InterpolationMode(self.interpolation)

    def _to_tensor(self) -> list:
        return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(self.mean), list(self.std))]


def resize_for(size: int, crop_pct: float) -> int:
    """timm's evaluation resize: floor(size / crop_pct), so 224 at crop_pct 0.875 resizes to 256."""
    return int(math.floor(size / crop_pct))


class ImageDataset(Dataset):
    """Images (paths, PIL images, arrays or tensors) and their targets, transformed on access."""

    def __init__(self, inputs: list, targets: np.ndarray, transform):
        self.inputs = inputs
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> dict:
        pixels = self.transform(open_rgb(self.inputs[index]))
        return {"pixel_values": pixels, "target": self.targets[index], "index": index}

    def with_transform(self, transform) -> ImageDataset:
        return ImageDataset(self.inputs, self.targets, transform)


class ImageCollator:
    """Stack a batch of transformed images, their targets and dataset indices."""

    def __init__(self, target_dtype: torch.dtype):
        self.target_dtype = target_dtype

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        return {"pixel_values": torch.stack([item["pixel_values"] for item in items]),
                "targets": torch.as_tensor(np.stack([np.asarray(item["target"]) for item in items]),
                                           dtype=self.target_dtype),
                "index": torch.tensor([item["index"] for item in items], dtype=torch.long)}


class MixBatches:
    """Mixup (Zhang et al. 2018) or CutMix (Yun et al. 2019) of each batch with its reverse.

    Targets become soft: class probabilities (classification) or label weights (multi-label), which
    cross-entropy and BCE both accept. Random draws use torch's generator, seeded per worker.
    """

    def __init__(self, collate, num_classes: int, mixup_alpha: float, cutmix_alpha: float, prob: float,
                 switch_prob: float):
        self.collate, self.num_classes = collate, num_classes
        self.mixup_alpha, self.cutmix_alpha, self.prob, self.switch_prob = mixup_alpha, cutmix_alpha, prob, switch_prob

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.collate(items)
        targets = batch["targets"]
        if targets.ndim == 1:
            targets = F.one_hot(targets.long(), self.num_classes).float()
        if torch.rand(()).item() < self.prob:
            batch["pixel_values"], lam = self._mix(batch["pixel_values"])
            targets = lam * targets + (1 - lam) * targets.flip(0)
        batch["targets"] = targets
        return batch

    def _mix(self, pixels: torch.Tensor) -> tuple[torch.Tensor, float]:
        cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or torch.rand(()).item() < self.switch_prob)
        alpha = self.cutmix_alpha if cutmix else self.mixup_alpha
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        partner = pixels.flip(0)
        if not cutmix:
            return lam * pixels + (1 - lam) * partner, lam
        height, width = pixels.shape[-2:]
        cut_h, cut_w = int(height * math.sqrt(1 - lam)), int(width * math.sqrt(1 - lam))
        cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
        pixels = pixels.clone()
        pixels[..., y0:y1, x0:x1] = partner[..., y0:y1, x0:x1]
        return pixels, 1 - (y1 - y0) * (x1 - x0) / (height * width)  # the area actually kept


class ShuffledBatches(Sampler[list[int]]):
    """A fresh random order each epoch, drawn from (seed, epoch) so a resumed run sees the same one.

    A last batch of a single example is dropped: batch norm cannot train on one example.
    """

    def __init__(self, size: int, batch_size: int, seed: int = 0):
        self.size, self.batch_size, self.seed, self.epoch = size, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.size, self.batch_size)
        return full + (1 if rest > 1 or (rest == 1 and full == 0) else 0)

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield order[start: start + self.batch_size].tolist()
        self.epoch += 1


def save_image_folder(images: np.ndarray, labels: np.ndarray, class_names: list[str], folder: Path) -> None:
    """Write uint8 arrays as PNG files in one sub-folder per class (the layout lobell reads)."""
    for name in class_names:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for index, (pixels, label) in enumerate(zip(images, labels)):
        Image.fromarray(pixels).save(folder / class_names[int(label)] / f"{index:05d}.png")


def npz_image_folders(npz: Path, root: Path, splits: tuple[str, ...] = ("train", "validation", "test")) -> Path:
    """Unpack `<split>_images`/`<split>_labels`/`class_names` arrays into `root/<split>/<class>/*.png`.

    Written once (atomically) and reused while the .npz is unchanged.
    """
    import hashlib

    from lobell.run_dir import atomic_write_dir

    digest = hashlib.sha256(npz.read_bytes()).hexdigest()
    stamp = root / "source.sha256"
    if stamp.is_file() and stamp.read_text() == digest:
        return root

    def fill(folder: Path) -> None:
        with np.load(npz) as arrays:
            names = [str(n) for n in arrays["class_names"]]
            for split in splits:
                save_image_folder(arrays[f"{split}_images"], arrays[f"{split}_labels"], names, folder / split)
        (folder / "source.sha256").write_text(digest)

    atomic_write_dir(root, fill)
    return root
