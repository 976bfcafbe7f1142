"""Box-aware augmentation (torchvision.transforms.v2 + tv_tensors), the detection dataset and its collate."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from lobell.data.detection.boxes import DetectionSample
from lobell.data.image import open_rgb

AUGMENT_PRESETS = ("none", "light", "strong")
# light: scale jitter around the training size then a crop back to it (torchvision's large-scale-
# jitter recipe, narrowed: fine-tuning data stays close to its own scale), a flip, mild colour.
_LIGHT_SCALE = (0.75, 1.33)
_COLOUR = {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.02}


def detection_transform(augment: str, size: int) -> v2.Compose:
    """PIL image + boxes -> float 0-1 image tensor + boxes, augmented for training unless `augment` is none.

    Detectors normalise and resize inside their own transform (GeneralizedRCNNTransform), so the
    pipeline stops at 0-1 floats. Boxes move with the pixels; boxes cropped away (or left under
    a pixel wide) are dropped with their labels (SanitizeBoundingBoxes).

    Args:
        augment: `none`, `light` (colour jitter, flip, scale jitter + crop to `size`) or `strong`
            (torchvision's SSD recipe: photometric distortion, zoom out, IoU crop, flip).
        size: the training image side: `light` crops to a `size` x `size` square.
    """
    start = [v2.ToImage()]
    end = [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0), v2.ToDtype(torch.float32, scale=True)]
    if augment == "none":
        return v2.Compose(start + [v2.ToDtype(torch.float32, scale=True)])
    if augment == "light":
        steps = [v2.ColorJitter(**_COLOUR), v2.RandomHorizontalFlip(),
                 v2.ScaleJitter((size, size), scale_range=_LIGHT_SCALE, antialias=True),
                 v2.RandomCrop((size, size), pad_if_needed=True)]
    elif augment == "strong":
        steps = [v2.RandomPhotometricDistort(p=0.5), v2.RandomZoomOut(fill={tv_tensors.Image: (124, 116, 104),
                                                                          "others": 0}, side_range=(1.0, 2.0), p=0.5),
                 v2.RandomIoUCrop(), v2.RandomHorizontalFlip()]
    else:
        raise ValueError(f"augment must be one of {AUGMENT_PRESETS}, got {augment!r}")
    return v2.Compose(start + steps + end)


class DetectionDataset(Dataset):
    """Samples as {pixel_values: float image, boxes: (N, 4) xyxy, labels: (N,), index}, transformed on access."""

    def __init__(self, samples: list[DetectionSample], transform):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        s = self.samples[index]
        image = open_rgb(s.image)
        boxes = tv_tensors.BoundingBoxes(torch.as_tensor(s.boxes, dtype=torch.float32).reshape(-1, 4),
                                         format="XYXY", canvas_size=(image.height, image.width))
        target = {"boxes": boxes, "labels": torch.as_tensor(s.labels, dtype=torch.int64)}
        pixels, target = self.transform(image, target)
        return {"pixel_values": pixels, "boxes": target["boxes"].as_subclass(torch.Tensor),
                "labels": target["labels"], "index": index}

    def with_transform(self, transform) -> DetectionDataset:
        return DetectionDataset(self.samples, transform)


def detection_collate(items: list[dict]) -> dict:
    """Images differ in size and box counts: lists, as torchvision's detectors take them."""
    return {"pixel_values": [item["pixel_values"] for item in items],
            "targets": [{"boxes": item["boxes"], "labels": item["labels"]} for item in items],
            "index": torch.tensor([item["index"] for item in items], dtype=torch.long)}
