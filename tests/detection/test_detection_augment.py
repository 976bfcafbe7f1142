"""Box-aware augmentation: boxes move with the pixels, boxes cropped away go with their labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detection_fixtures import draw_scene
from torchvision.transforms import v2

from lobell.data.detection import DetectionDataset, detection_collate, detection_transform
from lobell.data.detection.boxes import DetectionSample

BRIGHT = 0.6  # the white box stays above this after colour jitter; the black ground and zoom-out fill stay below


def _dataset(tmp_path, boxes, transform, size=(80, 64)):
    path = draw_scene(tmp_path / "scene.png", boxes, size)
    sample = DetectionSample(str(path), np.array(boxes, dtype=np.float32).reshape(-1, 4),
                             np.arange(len(boxes), dtype=np.int64), *size)
    return DetectionDataset([sample], transform)


def _pixel_box(pixels: torch.Tensor) -> list[float] | None:
    rows, cols = torch.nonzero(pixels.mean(0) > BRIGHT, as_tuple=True)
    if not len(rows):
        return None
    return [float(cols.min()), float(rows.min()), float(cols.max()) + 1, float(rows.max()) + 1]


def test_a_known_box_after_flip_and_crop(tmp_path):
    transform = v2.Compose([v2.ToImage(), v2.RandomHorizontalFlip(p=1.0), v2.CenterCrop((48, 64)),
                            v2.ToDtype(torch.float32, scale=True)])
    item = _dataset(tmp_path, [[10, 8, 30, 24]], transform)[0]
    # flip in an 80-wide image: x -> 80 - x gives [50, 8, 70, 24]; the centre crop starts at (8, 8).
    assert item["boxes"].tolist() == [[42.0, 0.0, 62.0, 16.0]]
    assert _pixel_box(item["pixel_values"]) == [42.0, 0.0, 62.0, 16.0]
    assert item["pixel_values"].shape == (3, 48, 64) and item["pixel_values"].dtype == torch.float32


def test_a_box_cropped_away_leaves_with_its_label(tmp_path):
    transform = v2.Compose([v2.ToImage(), v2.CenterCrop((32, 32)), v2.ClampBoundingBoxes(),
                            v2.SanitizeBoundingBoxes(), v2.ToDtype(torch.float32, scale=True)])
    item = _dataset(tmp_path, [[0, 0, 10, 10], [30, 22, 50, 42]], transform)[0]
    assert item["labels"].tolist() == [1]
    assert item["boxes"].tolist() == [[6.0, 6.0, 26.0, 26.0]]


def test_light_keeps_boxes_on_their_pixels(tmp_path):
    dataset = _dataset(tmp_path, [[20, 12, 52, 40]], detection_transform("light", 64))
    for seed in range(25):
        torch.manual_seed(seed)
        item = dataset[0]
        assert item["pixel_values"].shape[-2:] == (64, 64)
        found = _pixel_box(item["pixel_values"])
        if not len(item["boxes"]):
            assert found is None or min(found[2] - found[0], found[3] - found[1]) < 2  # cropped (almost) away
            continue
        np.testing.assert_allclose(item["boxes"][0].tolist(), found, atol=2.0)


@pytest.mark.parametrize("augment", ["light", "strong"])
def test_presets_move_boxes_as_they_move_a_mask_of_the_box(augment):
    """strong's colour changes can make white darker than its zoom-out fill: follow a mask instead,
    which every geometric step moves exactly as it moves the image (and no colour step touches)."""
    from torchvision import tv_tensors

    transform = detection_transform(augment, 64)
    checked = 0
    for seed in range(25):
        torch.manual_seed(seed)
        image = tv_tensors.Image(torch.full((3, 64, 80), 100, dtype=torch.uint8))
        mask = torch.zeros((1, 64, 80), dtype=torch.uint8)
        mask[:, 12:40, 20:52] = 1
        target = {"boxes": tv_tensors.BoundingBoxes([[20, 12, 52, 40]], format="XYXY", canvas_size=(64, 80)),
                  "labels": torch.tensor([0]), "masks": tv_tensors.Mask(mask)}
        pixels, out = transform(image, target)
        assert out["masks"].shape[-2:] == pixels.shape[-2:]
        if not len(out["boxes"]):
            continue
        found = _pixel_box(out["masks"].float().expand(3, -1, -1))
        np.testing.assert_allclose(out["boxes"][0].tolist(), found, atol=2.0)
        checked += 1
    assert checked >= 10


def test_none_is_the_image_as_floats_and_the_boxes_unchanged(tmp_path):
    item = _dataset(tmp_path, [[20, 12, 52, 40]], detection_transform("none", 64))[0]
    assert item["boxes"].tolist() == [[20.0, 12.0, 52.0, 40.0]]
    assert item["pixel_values"].shape == (3, 64, 80) and float(item["pixel_values"].max()) == 1.0


def test_collate_keeps_images_and_box_lists_apart(tmp_path):
    dataset = _dataset(tmp_path, [[20, 12, 52, 40]], detection_transform("none", 64))
    batch = detection_collate([dataset[0], dataset[0]])
    assert len(batch["pixel_values"]) == 2 and batch["index"].tolist() == [0, 0]
    assert [t["boxes"].shape for t in batch["targets"]] == [(1, 4), (1, 4)]
    assert type(batch["targets"][0]["boxes"]) is torch.Tensor  # a plain tensor: detectors and DDP take it
